//! Time series of the node and site pages, reduced to at most a few hundred
//! points so a week of data stays a small answer. Pure.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::view::Class;
use crate::store::samples::{FilesystemRow, InterfaceRow, NodeRow};
use crate::store::{LastState, ProbeRow, Rows};

/// Redirect changes listed on a site page.
pub const REDIRECTS: usize = 50;

const HOUR_MS: u64 = 3_600_000;

/// The span of a node or site page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    Hour,
    Day,
    Week,
}

impl Range {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "1h" => Some(Self::Hour),
            "24h" => Some(Self::Day),
            "7d" => Some(Self::Week),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "1h",
            Self::Day => "24h",
            Self::Week => "7d",
        }
    }

    pub fn ms(self) -> u64 {
        match self {
            Self::Hour => HOUR_MS,
            Self::Day => 24 * HOUR_MS,
            Self::Week => 168 * HOUR_MS,
        }
    }
}

/// `[[ts_ms, value], …]`.
fn points(pairs: impl IntoIterator<Item = (u64, f64)>) -> Value {
    Value::Array(pairs.into_iter().map(|(t, v)| json!([t, v])).collect())
}

/// The node page's series from history reads (already bucketed by the
/// store, at most 200 buckets): CPU, memory, CPU pressure; the fullest
/// filesystem per bucket; network summed over interfaces.
pub fn node(nodes: &Rows, filesystems: &Rows, interfaces: &Rows) -> Value {
    let n = &nodes.nodes;
    let series =
        |f: fn(&NodeRow) -> Option<f64>| points(n.iter().filter_map(|r| Some((r.ts, f(r)?))));
    let mut disk: BTreeMap<u64, f64> = BTreeMap::new();
    for fs in &filesystems.filesystems {
        let slot = disk.entry(fs.ts).or_insert(0.0);
        *slot = slot.max(used(fs));
    }
    let mut rx: BTreeMap<u64, f64> = BTreeMap::new();
    let mut tx: BTreeMap<u64, f64> = BTreeMap::new();
    for i in interfaces.interfaces.iter().filter(|i| !loopback(i)) {
        *rx.entry(i.ts).or_insert(0.0) += i.rx_bytes_per_s;
        *tx.entry(i.ts).or_insert(0.0) += i.tx_bytes_per_s;
    }
    json!({
        "cpu_busy_pct": series(|r| Some(r.cpu_busy_pct)),
        "mem_used_pct": series(|r| Some(r.mem_used_pct)),
        "load1": series(|r| Some(r.load1)),
        "psi_cpu_some": series(|r| r.psi_cpu_some),
        "psi_memory_some": series(|r| r.psi_memory_some),
        "psi_io_some": series(|r| r.psi_io_some),
        "disk_used_pct": points(disk),
        "net_rx_bps": points(rx),
        "net_tx_bps": points(tx),
    })
}

fn used(fs: &FilesystemRow) -> f64 {
    fs.used_pct
}

fn loopback(i: &InterfaceRow) -> bool {
    i.interface == "lo"
}

/// A bucket index of `ts` in `points` equal buckets over `since..=until`.
fn bucket(ts: u64, since: u64, width: u64) -> u64 {
    ts.saturating_sub(since) / width.max(1)
}

fn width(since: u64, until: u64, points: u32) -> u64 {
    (until.saturating_sub(since) + 1).div_ceil(u64::from(points.max(1)))
}

/// How bad a class is, for the strip's worst-of-bucket.
fn severity(class: Class) -> u8 {
    match class {
        Class::Up => 0,
        Class::Redirect => 1,
        Class::Error => 2,
        Class::Down => 3,
    }
}

/// The status strip: per bucket (at most `points`), the worst probe's
/// status and class; `probes` oldest first.
pub fn strip(probes: &[ProbeRow], since: u64, until: u64, points: u32) -> Vec<Value> {
    let width = width(since, until, points);
    let mut worst: BTreeMap<u64, &ProbeRow> = BTreeMap::new();
    for probe in probes.iter().filter(|p| p.ts >= since) {
        let slot = worst.entry(bucket(probe.ts, since, width)).or_insert(probe);
        if severity(Class::of(probe.status)) > severity(Class::of(slot.status)) {
            *slot = probe;
        }
    }
    worst
        .into_iter()
        .map(|(index, p)| {
            json!({
                "ts_ms": since + index * width,
                "status": p.status,
                "class": Class::of(p.status),
                "error": p.error,
            })
        })
        .collect()
}

/// Mean latency per bucket (ms); `probes` oldest first.
pub fn latency(probes: &[ProbeRow], since: u64, until: u64, points: u32) -> Value {
    let width = width(since, until, points);
    let mut sums: BTreeMap<u64, (f64, u32)> = BTreeMap::new();
    for probe in probes.iter().filter(|p| p.ts >= since) {
        let slot = sums
            .entry(bucket(probe.ts, since, width))
            .or_insert((0.0, 0));
        slot.0 += probe.latency_us as f64 / 1000.0;
        slot.1 += 1;
    }
    self::points(
        sums.into_iter()
            .map(|(index, (sum, n))| (since + index * width, sum / f64::from(n.max(1)))),
    )
}

/// Each change of redirect target (oldest first), the newest
/// [`REDIRECTS`].
pub fn redirects(probes: &[ProbeRow]) -> Vec<Value> {
    let mut changes: Vec<&ProbeRow> = Vec::new();
    let mut previous: Option<&str> = None;
    for probe in probes {
        if previous != Some(probe.location.as_str()) && !probe.location.is_empty() {
            changes.push(probe);
        }
        previous = Some(probe.location.as_str());
    }
    let skip = changes.len().saturating_sub(REDIRECTS);
    changes
        .into_iter()
        .skip(skip)
        .map(|p| json!({ "ts_ms": p.ts, "location": p.location, "cross_domain": p.cross != 0, "status": p.status }))
        .collect()
}

/// What `health_last` keeps of a probe, as a probe (no node, no certificate
/// expiry: the store without history has no more).
pub fn probe_of(last: &LastState) -> ProbeRow {
    ProbeRow {
        site: last.site.clone(),
        status: last.status,
        ms: last.ms,
        port: last.port,
        location: last.location.clone(),
        cross: last.cross,
        ts: last.ts,
        latency_us: u64::from(last.ms) * 1000,
        cert_trust: last.cert_trust.clone(),
        cert_error: last.cert_error.clone(),
        content: last.content.clone(),
        content_failure: last.content_failure.clone(),
        content_excerpt: last.content_excerpt.clone(),
        ..ProbeRow::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(ts: u64, status: u16, location: &str) -> ProbeRow {
        ProbeRow {
            ts,
            status,
            location: location.into(),
            latency_us: 10_000,
            ..ProbeRow::default()
        }
    }

    #[test]
    fn the_strip_keeps_the_worst_of_each_bucket_in_at_most_points() {
        let probes: Vec<ProbeRow> = (0..1000)
            .map(|i| probe(i * 10, if i == 501 { 503 } else { 200 }, ""))
            .collect();
        let strip = strip(&probes, 0, 9_999, 200);
        assert_eq!(strip.len(), 200);
        let down: Vec<&Value> = strip.iter().filter(|s| s["class"] == "down").collect();
        assert_eq!(down.len(), 1);
        assert_eq!(down[0]["status"], 503);
        let latency = latency(&probes, 0, 9_999, 200);
        assert_eq!(latency.as_array().map(Vec::len), Some(200));
        assert_eq!(latency[0][1], 10.0);
    }

    #[test]
    fn redirects_list_changes_of_target() {
        let probes = [
            probe(1, 301, "https://a/"),
            probe(2, 301, "https://a/"),
            probe(3, 200, ""),
            probe(4, 302, "https://b/"),
        ];
        let r = redirects(&probes);
        let targets: Vec<&Value> = r.iter().map(|v| &v["location"]).collect();
        assert_eq!(targets, [&json!("https://a/"), &json!("https://b/")]);
    }

    #[test]
    fn ranges_parse() {
        assert_eq!(Range::parse("24h"), Some(Range::Day));
        assert_eq!(Range::parse("7d").map(Range::ms), Some(604_800_000));
        assert_eq!(Range::parse("2h"), None);
    }
}
