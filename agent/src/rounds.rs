//! Probe rounds: every `interval`, discover the sites and probe each once,
//! spreading the starts over part of the round and bounding concurrency.

use std::sync::Arc;
use std::time::Duration;

use livehead_common::Shutdown;
use livehead_proto::v1::{ContentOutcome, ProbeError, ProbeResult, Record, record::Kind};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

use crate::content::ContentChecks;
use crate::discovery::{Discovery, Site};
use crate::metrics::AgentMetrics;
use crate::probe::Prober;

/// When probe `index` of `count` starts, relative to the round's start, so that
/// starts are evenly spaced over `window`.
pub fn start_offset(index: usize, count: usize, window: Duration) -> Duration {
    if count == 0 {
        return Duration::ZERO;
    }
    let nanos = window.as_nanos() * index as u128 / count as u128;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Round settings after validation.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub interval: Duration,
    pub spread_window: Duration,
    pub concurrency: usize,
    /// One round, then [`run`] returns.
    pub once: bool,
    /// Content checks and their cadence; `None`: HEAD-first probes only.
    pub content: Option<Arc<ContentChecks>>,
    /// Length of a round for the content cadence: `rounds.interval`, also
    /// for one-shot runs (whose `interval` is zero), which cron starts
    /// every interval.
    pub content_period: Duration,
    /// The agent's `vantage`, put in every probe result ("" = inside).
    pub vantage: Arc<str>,
}

impl Schedule {
    pub fn new(interval: Duration, spread: f64, concurrency: usize) -> Self {
        Self {
            interval,
            spread_window: interval.mul_f64(spread.clamp(0.0, 1.0)),
            concurrency: concurrency.max(1),
            once: false,
            content: None,
            content_period: interval,
            vantage: Arc::from(""),
        }
    }

    /// A single round started as fast as `concurrency` allows: nothing
    /// follows it, so spreading its starts would only make it longer.
    pub fn once(concurrency: usize) -> Self {
        Self {
            interval: Duration::ZERO,
            spread_window: Duration::ZERO,
            concurrency: concurrency.max(1),
            once: true,
            content: None,
            content_period: Duration::ZERO,
            vantage: Arc::from(""),
        }
    }

    /// The same schedule, with content checks on their cadence, rounds
    /// being `period` long.
    pub fn with_content(mut self, content: Option<ContentChecks>, period: Duration) -> Self {
        self.content = content.map(Arc::new);
        self.content_period = period;
        self
    }

    /// The same schedule, its probes labelled with `vantage`.
    pub fn with_vantage(mut self, vantage: &str) -> Self {
        self.vantage = Arc::from(vantage);
        self
    }
}

/// The number of the round starting at `now_ms`: the count of `period`s
/// since the epoch, from the clock rather than a counter so that one-shot
/// runs started by cron take their turns too.
pub fn round_number(now_ms: u64, period: Duration) -> u64 {
    let period_ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX).max(1);
    now_ms / period_ms
}

/// Runs rounds until `shutdown` (or after one round with [`Schedule::once`]);
/// each result goes to `records` as a [`Kind::Probe`] record.
pub async fn run(
    schedule: Schedule,
    discovery: Discovery,
    prober: Prober,
    records: mpsc::Sender<Record>,
    metrics: AgentMetrics,
    shutdown: Shutdown,
) {
    loop {
        let started = Instant::now();
        let round = round_number(livehead_common::clock::unix_ms(), schedule.content_period);
        let sites = discover(&discovery, &metrics);
        let span = tracing::info_span!(
            "agent.round",
            round,
            sites = sites.len(),
            outcome = tracing::field::Empty
        );
        tokio::select! {
            () = run_round(&schedule, round, sites, &prober, &records, &metrics)
                .instrument(span.clone()) => {
                span.record("outcome", "done");
            }
            () = shutdown.cancelled() => {
                span.record("outcome", "stopped");
                return;
            }
        }
        let took = started.elapsed();
        metrics.rounds.inc();
        metrics.round_seconds.set(took.as_secs_f64());
        if schedule.once {
            tracing::info!(took_ms = took.as_millis() as u64, "round done");
            return;
        }
        if took > schedule.interval {
            tracing::warn!(
                took_ms = took.as_millis() as u64,
                interval_ms = schedule.interval.as_millis() as u64,
                "round took longer than the interval; starting the next one now"
            );
        }
        tokio::select! {
            () = tokio::time::sleep_until(started + schedule.interval) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

fn discover(discovery: &Discovery, metrics: &AgentMetrics) -> Vec<Site> {
    let found = discovery.discover();
    for error in &found.errors {
        metrics.discovery_errors.inc();
        tracing::error!(%error, "site discovery");
    }
    for (line, text) in &found.bad_lines {
        tracing::warn!(
            line,
            text,
            "site list line is neither a host name nor an http(s) URL; skipped"
        );
    }
    metrics.sites.set(found.sites.len() as i64);
    found.sites
}

/// Probes every site once (round number `round`, counted from 0, decides
/// which sites get a content check). Returns when all probes have finished.
pub async fn run_round(
    schedule: &Schedule,
    round: u64,
    sites: Vec<Site>,
    prober: &Prober,
    records: &mpsc::Sender<Record>,
    metrics: &AgentMetrics,
) {
    let started = Instant::now();
    let count = sites.len();
    let permits = Arc::new(Semaphore::new(schedule.concurrency));
    let mut tasks = JoinSet::new();
    for (index, site) in sites.into_iter().enumerate() {
        tokio::time::sleep_until(started + start_offset(index, count, schedule.spread_window))
            .await;
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let (prober, records, metrics) = (prober.clone(), records.clone(), metrics.clone());
        let vantage = schedule.vantage.clone();
        let content = schedule
            .content
            .clone()
            .filter(|checks| checks.due(&site.name, round));
        tasks.spawn(async move {
            let (mut result, checked) = probe(&prober, &site, content.as_deref()).await;
            result.vantage = vantage.to_string();
            drop(permit);
            record(&metrics, &result);
            if checked {
                record_content(&metrics, &result);
            }
            // A closed channel means the agent is stopping; the result is moot.
            let record = Record {
                kind: Some(Kind::Probe(result)),
            };
            let _ = records.send(record).await;
        });
        // Reap finished tasks as we go so a 30,000-site round keeps little state.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// A content check when one is due and the site has assertions, else the
/// HEAD-first probe; true for a content check.
async fn probe(
    prober: &Prober,
    site: &Site,
    content: Option<&ContentChecks>,
) -> (ProbeResult, bool) {
    let checked = content.and_then(|c| Some((c.for_site(&site.name)?, c.max_body_bytes())));
    match checked {
        Some((assertions, limit)) => {
            let result = prober
                .probe_content(&site.name, &site.target, assertions, limit)
                .await;
            (result, true)
        }
        None => (prober.probe(&site.name, &site.target).await, false),
    }
}

fn record_content(metrics: &AgentMetrics, result: &ProbeResult) {
    let outcome = match result.content() {
        ContentOutcome::Ok => "ok",
        ContentOutcome::Failed => "failed",
        ContentOutcome::Unspecified => "unchecked",
    };
    metrics.content_checks.with_label_values(&[outcome]).inc();
}

fn record(metrics: &AgentMetrics, result: &ProbeResult) {
    let outcome = match result.error() {
        ProbeError::Unspecified => match result.status {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            500..=599 => "5xx",
            _ => "other_status",
        },
        kind => kind.as_label(),
    };
    metrics.probes.with_label_values(&[outcome]).inc();
    metrics
        .probe_seconds
        .observe(result.latency_us as f64 / 1_000_000.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_are_evenly_spread_over_the_window() {
        let w = Duration::from_secs(100);
        assert_eq!(start_offset(0, 4, w), Duration::ZERO);
        assert_eq!(start_offset(1, 4, w), Duration::from_secs(25));
        assert_eq!(start_offset(3, 4, w), Duration::from_secs(75));
        assert_eq!(start_offset(5, 10, Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn spread_is_a_fraction_of_the_interval() {
        let s = Schedule::new(Duration::from_secs(60), 0.5, 0);
        assert_eq!(s.spread_window, Duration::from_secs(30));
        assert_eq!(s.concurrency, 1);
        assert_eq!(
            Schedule::new(Duration::from_secs(60), 7.0, 1).spread_window,
            Duration::from_secs(60)
        );
    }

    #[test]
    fn round_numbers_count_periods_so_one_shot_runs_take_turns() {
        let period = Duration::from_secs(1800);
        assert_eq!(round_number(0, period), 0);
        assert_eq!(round_number(1_800_000, period), 1);
        assert_eq!(round_number(5_399_999, period), 2);
        // A zero period (no interval) does not divide by zero.
        assert_eq!(round_number(42, Duration::ZERO), 42);
    }

    #[test]
    fn a_single_round_is_not_spread() {
        let s = Schedule::once(0);
        assert!(s.once);
        assert_eq!(s.spread_window, Duration::ZERO);
        assert_eq!(s.concurrency, 1);
    }
}
