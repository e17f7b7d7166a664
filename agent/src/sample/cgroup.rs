//! Pods and containers, from their cgroup v2 files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use livehead_proto::v1::PodSample;

use super::procfs::rate;
use super::read::{ReadError, Reader};

/// `usage_usec` and `throttled_usec` of `cpu.stat`.
pub fn parse_cpu_stat(text: &str) -> (u64, u64) {
    (
        flat_keyed(text, "usage_usec").unwrap_or(0),
        flat_keyed(text, "throttled_usec").unwrap_or(0),
    )
}

/// The value of `key` in a flat keyed file (`memory.stat`, `memory.events`,
/// `cpu.stat`: one `key value` per line).
pub fn flat_keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

/// A single-value file where `max` means no limit (0).
pub fn parse_max(text: &str) -> Option<u64> {
    match text.trim() {
        "max" => Some(0),
        v => v.parse().ok(),
    }
}

/// `io.stat` summed over its devices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoTotals {
    pub rbytes: u64,
    pub wbytes: u64,
    pub rios: u64,
    pub wios: u64,
}

pub fn parse_io_stat(text: &str) -> IoTotals {
    let mut t = IoTotals::default();
    for line in text.lines() {
        // "8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0"
        for kv in line.split_ascii_whitespace().skip(1) {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let v: u64 = v.parse().unwrap_or(0);
            match k {
                "rbytes" => t.rbytes = t.rbytes.saturating_add(v),
                "wbytes" => t.wbytes = t.wbytes.saturating_add(v),
                "rios" => t.rios = t.rios.saturating_add(v),
                "wios" => t.wios = t.wios.saturating_add(v),
                _ => {}
            }
        }
    }
    t
}

/// The pod a cgroup belongs to, from its last path component: the pod UID of
/// a Kubernetes pod cgroup (`kubepods-burstable-pod<uid>.slice` with `_` for
/// `-`, or `pod<uid>`), else the component itself.
pub fn pod_name(cgroup: &str) -> String {
    let last = cgroup.rsplit('/').next().unwrap_or(cgroup);
    let last = last.strip_suffix(".slice").unwrap_or(last);
    match last.rfind("pod") {
        Some(i) if !last[i + 3..].is_empty() => last[i + 3..].replace('_', "-"),
        _ => last.to_owned(),
    }
}

/// Everything one cgroup's files say, read in one go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupCounters {
    pub usage_us: u64,
    pub throttled_us: u64,
    pub memory_current: u64,
    pub memory_max: u64,
    pub inactive_file: u64,
    pub oom_kills: u64,
    pub io: IoTotals,
    pub pids_current: u64,
    pub pids_max: u64,
}

/// Reads a cgroup's files. A controller that is not enabled for the cgroup
/// has no files: its fields stay 0. Only a cgroup without `cpu.stat` (always
/// there in v2) is an error: it has gone.
pub fn read_cgroup(reader: &mut Reader, dir: &Path) -> std::io::Result<CgroupCounters> {
    let mut c = CgroupCounters::default();
    (c.usage_us, c.throttled_us) = parse_cpu_stat(reader.read(&dir.join("cpu.stat"))?);
    let mut opt = |name: &str, parse: &dyn Fn(&str) -> Option<u64>| -> u64 {
        match reader.read_optional(&dir.join(name)) {
            Ok(Some(t)) => parse(t).unwrap_or(0),
            _ => 0,
        }
    };
    c.memory_current = opt("memory.current", &parse_max);
    c.memory_max = opt("memory.max", &parse_max);
    c.inactive_file = opt("memory.stat", &|t| flat_keyed(t, "inactive_file"));
    c.oom_kills = opt("memory.events", &|t| flat_keyed(t, "oom_kill"));
    c.pids_current = opt("pids.current", &parse_max);
    c.pids_max = opt("pids.max", &parse_max);
    c.io = match reader.read_optional(&dir.join("io.stat")) {
        Ok(Some(t)) => parse_io_stat(t),
        _ => IoTotals::default(),
    };
    Ok(c)
}

pub fn to_sample(
    ts_ms: u64,
    cgroup: &str,
    prev: &CgroupCounters,
    cur: &CgroupCounters,
    secs: f64,
) -> PodSample {
    PodSample {
        ts_ms,
        pod: pod_name(cgroup),
        cgroup: cgroup.to_owned(),
        // usec per second / 10^6 * 100: 100 = one core.
        cpu_pct: rate(prev.usage_us, cur.usage_us, secs) / 10_000.0,
        cpu_throttled_us: cur.throttled_us.saturating_sub(prev.throttled_us),
        memory_current_bytes: cur.memory_current,
        memory_max_bytes: cur.memory_max,
        memory_working_set_bytes: cur.memory_current.saturating_sub(cur.inactive_file),
        oom_kills: cur.oom_kills,
        io_read_bytes_per_s: rate(prev.io.rbytes, cur.io.rbytes, secs),
        io_write_bytes_per_s: rate(prev.io.wbytes, cur.io.wbytes, secs),
        io_reads_per_s: rate(prev.io.rios, cur.io.rios, secs),
        io_writes_per_s: rate(prev.io.wios, cur.io.wios, secs),
        pids_current: cur.pids_current,
        pids_max: cur.pids_max,
    }
}

/// True when `cgroup_root` is a cgroup v2 (unified) hierarchy.
pub fn is_v2(cgroup_root: &Path) -> bool {
    cgroup_root.join("cgroup.controllers").exists()
}

/// Samples the cgroups matching the configured patterns, tick after tick.
#[derive(Debug)]
pub struct PodSampler {
    root: PathBuf,
    patterns: Vec<String>,
    reader: Reader,
    prev_at: Option<Instant>,
    prev: HashMap<String, CgroupCounters>,
}

impl PodSampler {
    pub fn new(root: PathBuf, patterns: Vec<String>) -> Self {
        Self {
            root,
            patterns,
            reader: Reader::default(),
            prev_at: None,
            prev: HashMap::new(),
        }
    }

    /// A cgroup's first sight is its baseline; it gets samples from its
    /// second on. A cgroup that disappears mid-read (its pod ended) is
    /// skipped silently.
    pub fn tick(&mut self, ts_ms: u64, now: Instant) -> (Vec<PodSample>, Vec<ReadError>) {
        let secs = self
            .prev_at
            .map_or(0.0, |p| now.saturating_duration_since(p).as_secs_f64());
        self.prev_at = Some(now);
        let mut errors = Vec::new();
        let mut samples = Vec::new();
        let mut next = HashMap::with_capacity(self.prev.len());
        for dir in self.matches(&mut errors) {
            let Ok(rel) = dir.strip_prefix(&self.root) else {
                continue;
            };
            let rel = rel.to_string_lossy().into_owned();
            let cur = match read_cgroup(&mut self.reader, &dir) {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    errors.push(ReadError::new("cgroup", &dir, e));
                    continue;
                }
            };
            if let Some(prev) = self.prev.get(&rel) {
                samples.push(to_sample(ts_ms, &rel, prev, &cur, secs));
            }
            next.insert(rel, cur);
        }
        self.prev = next;
        (samples, errors)
    }

    fn matches(&self, errors: &mut Vec<ReadError>) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        for p in &self.patterns {
            let full = self.root.join(p);
            let Ok(paths) = glob::glob(&full.to_string_lossy()) else {
                // Patterns are checked by SampleConfig::validate.
                continue;
            };
            for entry in paths {
                match entry {
                    Ok(d) if d.is_dir() && !dirs.contains(&d) => dirs.push(d),
                    Ok(_) => {}
                    Err(e) => {
                        let path = e.path().to_owned();
                        errors.push(ReadError::new("cgroup", &path, e.into()));
                    }
                }
            }
        }
        dirs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::time::Duration;

    fn fixture_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sample/cgroup")
    }

    fn fixture(rel: &str) -> String {
        fs::read_to_string(fixture_dir().join(rel)).expect("fixture files")
    }

    const POD: &str = "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_5f60_7182_93a4_b5c6d7e8f901.slice";

    #[test]
    fn parses_cgroup_v2_files() {
        let dir = format!("{POD}/");
        assert_eq!(
            parse_cpu_stat(&fixture(&format!("{dir}cpu.stat"))),
            (5_000_000, 250_000)
        );
        assert_eq!(
            flat_keyed(&fixture(&format!("{dir}memory.stat")), "inactive_file"),
            Some(104_857_600)
        );
        assert_eq!(
            flat_keyed(&fixture(&format!("{dir}memory.events")), "oom_kill"),
            Some(2)
        );
        assert_eq!(parse_max(&fixture(&format!("{dir}memory.max"))), Some(0));
        assert_eq!(parse_max(&fixture(&format!("{dir}pids.max"))), Some(0));
        assert_eq!(parse_max("1073741824\n"), Some(1_073_741_824));
        assert_eq!(parse_max("lots"), None);
        let io = parse_io_stat(&fixture(&format!("{dir}io.stat")));
        assert_eq!(
            io,
            IoTotals {
                rbytes: 1_000_000 + 24_000,
                wbytes: 2_000_000 + 8_000,
                rios: 100 + 6,
                wios: 200 + 2,
            }
        );
    }

    #[test]
    fn pod_names_from_both_cgroup_drivers() {
        assert_eq!(pod_name(POD), "1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901");
        assert_eq!(pod_name("kubepods/besteffort/pod0a1b-22"), "0a1b-22");
        assert_eq!(pod_name("system.slice/nginx.service"), "nginx.service");
    }

    #[test]
    fn v2_fixture_is_detected_and_this_v1_machine_is_not() {
        assert!(is_v2(&fixture_dir()));
        assert!(!is_v2(&fixture_dir().join("kubepods.slice")));
    }

    #[test]
    fn samples_pods_with_rates_from_the_second_tick() {
        let root = tempfile::tempdir().expect("fixture files");
        copy_tree(&fixture_dir(), root.path());
        let mut s = PodSampler::new(
            root.path().into(),
            crate::sample::config::DEFAULT_POD_CGROUPS
                .iter()
                .map(|&p| p.to_owned())
                .collect(),
        );
        let t0 = Instant::now();
        let (first, errors) = s.tick(1, t0);
        assert!(first.is_empty() && errors.is_empty(), "{errors:?}");

        let dir = root.path().join(POD);
        fs::write(dir.join("cpu.stat"), "usage_usec 15000000\nuser_usec 1\nsystem_usec 1\nnr_periods 0\nnr_throttled 0\nthrottled_usec 300000\n").expect("fixture files");
        // io counters of a pod that was restarted in place went backwards.
        fs::write(
            dir.join("io.stat"),
            "8:0 rbytes=10 wbytes=20 rios=1 wios=1\n",
        )
        .expect("test value");
        let (second, errors) = s.tick(2, t0 + Duration::from_secs(10));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(second.len(), 2, "{second:?}");
        let pod = second
            .iter()
            .find(|p| p.cgroup == POD)
            .expect("sample present");
        assert_eq!(pod.pod, "1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901");
        assert_eq!(pod.cpu_pct, 100.0, "10 s of CPU in 10 s is one core");
        assert_eq!(pod.cpu_throttled_us, 50_000);
        assert_eq!(pod.memory_current_bytes, 524_288_000);
        assert_eq!(pod.memory_max_bytes, 0);
        assert_eq!(pod.memory_working_set_bytes, 524_288_000 - 104_857_600);
        assert_eq!(pod.oom_kills, 2);
        assert_eq!(pod.io_read_bytes_per_s, 0.0);
        assert_eq!(pod.io_writes_per_s, 0.0);
        assert_eq!((pod.pids_current, pod.pids_max), (12, 0));
        let guaranteed = second
            .iter()
            .find(|p| p.cgroup != POD)
            .expect("sample present");
        assert_eq!(guaranteed.pod, "aaaa-bbbb");
        assert_eq!(guaranteed.memory_max_bytes, 268_435_456);
        assert_eq!(guaranteed.pids_max, 100);

        // The pod ends: its directory goes, silently.
        fs::remove_dir_all(&dir).expect("fixture files");
        let (third, errors) = s.tick(3, t0 + Duration::from_secs(20));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(third.len(), 1);
    }

    fn copy_tree(from: &Path, to: &Path) {
        for entry in fs::read_dir(from).expect("fixture files") {
            let entry = entry.expect("fixture files");
            let dest = to.join(entry.file_name());
            if entry.file_type().expect("fixture files").is_dir() {
                fs::create_dir_all(&dest).expect("fixture files");
                copy_tree(&entry.path(), &dest);
            } else {
                fs::copy(entry.path(), dest).expect("fixture files");
            }
        }
    }
}
