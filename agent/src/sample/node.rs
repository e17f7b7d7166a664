//! The node's CPU, memory, load, disks and interfaces, from procfs and sysfs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use livehead_proto::v1::{DiskSample, InterfaceSample, NodeSample};

use super::procfs::{self, CpuTimes, DiskCounters, NetCounters, rate};
use super::read::{ReadError, Reader};

/// What one tick read of the node.
#[derive(Debug, Default)]
pub struct NodeTick {
    /// None on the first tick (the baseline of the CPU shares) or when
    /// `/proc/stat`, `/proc/meminfo` or `/proc/loadavg` could not be read.
    pub node: Option<NodeSample>,
    pub disks: Vec<DiskSample>,
    pub interfaces: Vec<InterfaceSample>,
    pub errors: Vec<ReadError>,
}

/// Counters of the previous tick, the baseline of this tick's rates.
#[derive(Debug)]
pub struct NodeSampler {
    proc_root: PathBuf,
    sys_root: PathBuf,
    reader: Reader,
    prev_at: Option<Instant>,
    prev_cpu: Option<CpuTimes>,
    prev_disks: HashMap<String, DiskCounters>,
    prev_net: HashMap<String, NetCounters>,
}

impl NodeSampler {
    pub fn new(proc_root: PathBuf, sys_root: PathBuf) -> Self {
        Self {
            proc_root,
            sys_root,
            reader: Reader::default(),
            prev_at: None,
            prev_cpu: None,
            prev_disks: HashMap::new(),
            prev_net: HashMap::new(),
        }
    }

    /// Reads everything once. A device or interface seen for the first time
    /// (and everything on the first tick) is only a baseline: it gets a
    /// sample from its second sight on.
    pub fn tick(&mut self, ts_ms: u64, now: Instant) -> NodeTick {
        let secs = self
            .prev_at
            .map_or(0.0, |p| now.saturating_duration_since(p).as_secs_f64());
        self.prev_at = Some(now);
        let mut out = NodeTick::default();
        out.node = self.node(ts_ms, &mut out.errors);
        match self.read("diskstats", &["diskstats"]) {
            Ok(text) => {
                let disks = procfs::parse_diskstats(text);
                out.disks = self.disks(ts_ms, secs, disks);
            }
            Err(e) => out.errors.push(e),
        }
        match self.read("netdev", &["net", "dev"]) {
            Ok(text) => {
                let net = procfs::parse_netdev(text);
                out.interfaces = self.interfaces(ts_ms, secs, net);
            }
            Err(e) => out.errors.push(e),
        }
        out
    }

    fn read(&mut self, what: &'static str, rel: &[&str]) -> Result<&str, ReadError> {
        let path = rel.iter().fold(self.proc_root.clone(), |p, r| p.join(r));
        self.reader
            .read(&path)
            .map_err(|e| ReadError::new(what, &path, e))
    }

    fn parsed<T>(
        &mut self,
        what: &'static str,
        rel: &[&str],
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<T, ReadError> {
        let text = self.read(what, rel)?;
        parse(text).ok_or_else(|| {
            let path = rel.iter().fold(self.proc_root.clone(), |p, r| p.join(r));
            ReadError::unparsable(what, &path)
        })
    }

    fn node(&mut self, ts_ms: u64, errors: &mut Vec<ReadError>) -> Option<NodeSample> {
        let stat = self.parsed("stat", &["stat"], procfs::parse_stat);
        let mem = self.parsed("meminfo", &["meminfo"], procfs::parse_meminfo);
        let load = self.parsed("loadavg", &["loadavg"], procfs::parse_loadavg);
        // Optional extras: their absence leaves a field at 0, not the sample out.
        let fds = self.parsed("file-nr", &["sys", "fs", "file-nr"], procfs::parse_file_nr);
        let uptime = self.parsed("uptime", &["uptime"], procfs::parse_uptime);
        let psi = ["cpu", "io", "memory"].map(|r| self.psi(r, errors));
        let (stat, mem, load) = match (stat, mem, load) {
            (Ok(s), Ok(m), Ok(l)) => (s, m, l),
            (s, m, l) => {
                errors.extend(s.err());
                errors.extend(m.err());
                errors.extend(l.err());
                return None;
            }
        };
        let fds = fds.unwrap_or_else(|e| {
            errors.push(e);
            0
        });
        let uptime = uptime.unwrap_or_else(|e| {
            errors.push(e);
            0
        });
        let (cpu, cores) = stat;
        let prev = self.prev_cpu.replace(cpu)?;
        let pct = procfs::cpu_pct(&prev, &cpu);
        Some(NodeSample {
            ts_ms,
            cpu_cores: cores,
            cpu_busy_pct: pct.busy,
            cpu_user_pct: pct.user,
            cpu_system_pct: pct.system,
            cpu_iowait_pct: pct.iowait,
            cpu_steal_pct: pct.steal,
            load1: load.load1,
            load5: load.load5,
            load15: load.load15,
            tasks_running: load.running,
            tasks_total: load.total,
            mem_total_bytes: mem.total,
            mem_available_bytes: mem.available,
            mem_used_pct: procfs::mem_used_pct(&mem),
            swap_total_bytes: mem.swap_total,
            swap_free_bytes: mem.swap_free,
            psi_cpu_some: psi[0].0,
            psi_cpu_full: psi[0].1,
            psi_io_some: psi[1].0,
            psi_io_full: psi[1].1,
            psi_memory_some: psi[2].0,
            psi_memory_full: psi[2].1,
            open_fds: fds,
            uptime_s: uptime,
        })
    }

    /// A missing pressure file (kernel without PSI, or booted with psi=0)
    /// is normal and leaves the fields unset.
    fn psi(&mut self, resource: &str, errors: &mut Vec<ReadError>) -> (Option<f64>, Option<f64>) {
        let path = self.proc_root.join("pressure").join(resource);
        match self.reader.read_optional(&path) {
            Ok(Some(text)) => procfs::parse_psi(text),
            Ok(None) => (None, None),
            // EOPNOTSUPP: the file exists but PSI was disabled at boot.
            Err(e) if e.kind() == std::io::ErrorKind::Unsupported => (None, None),
            Err(e) => {
                errors.push(ReadError::new("pressure", &path, e));
                (None, None)
            }
        }
    }

    fn disks(&mut self, ts_ms: u64, secs: f64, disks: Vec<DiskCounters>) -> Vec<DiskSample> {
        let mut out = Vec::new();
        let mut next = HashMap::with_capacity(disks.len());
        for d in disks {
            if self.is_partition(&d.device) {
                continue;
            }
            if let Some(p) = self.prev_disks.get(&d.device) {
                out.push(DiskSample {
                    ts_ms,
                    device: d.device.clone(),
                    read_bytes_per_s: rate(p.read_sectors, d.read_sectors, secs) * 512.0,
                    write_bytes_per_s: rate(p.write_sectors, d.write_sectors, secs) * 512.0,
                    reads_per_s: rate(p.reads, d.reads, secs),
                    writes_per_s: rate(p.writes, d.writes, secs),
                });
            }
            next.insert(d.device.clone(), d);
        }
        self.prev_disks = next;
        out
    }

    /// Partitions repeat their disk's I/O, so only whole devices are kept.
    /// Without sysfs (or the device's entry) the device counts as a disk.
    fn is_partition(&self, device: &str) -> bool {
        // Device names with a '/' (cciss!c0d0) appear in sysfs with '!'.
        let name = device.replace('/', "!");
        self.sys_root
            .join("class/block")
            .join(name)
            .join("partition")
            .exists()
    }

    fn interfaces(&mut self, ts_ms: u64, secs: f64, net: Vec<NetCounters>) -> Vec<InterfaceSample> {
        let mut out = Vec::new();
        let mut next = HashMap::with_capacity(net.len());
        for n in net {
            if let Some(p) = self.prev_net.get(&n.interface) {
                out.push(InterfaceSample {
                    ts_ms,
                    interface: n.interface.clone(),
                    rx_bytes_per_s: rate(p.rx_bytes, n.rx_bytes, secs),
                    tx_bytes_per_s: rate(p.tx_bytes, n.tx_bytes, secs),
                    rx_packets_per_s: rate(p.rx_packets, n.rx_packets, secs),
                    tx_packets_per_s: rate(p.tx_packets, n.tx_packets, secs),
                    rx_errors_per_s: rate(p.rx_errors, n.rx_errors, secs),
                    tx_errors_per_s: rate(p.tx_errors, n.tx_errors, secs),
                    rx_drops_per_s: rate(p.rx_drops, n.rx_drops, secs),
                    tx_drops_per_s: rate(p.tx_drops, n.tx_drops, secs),
                });
            }
            next.insert(n.interface.clone(), n);
        }
        self.prev_net = next;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::time::Duration;

    /// A procfs root with the odd fixtures, which the test then rewrites.
    fn fake_proc() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("fixture files");
        let fx = format!("{}/tests/fixtures/sample", env!("CARGO_MANIFEST_DIR"));
        let p = dir.path();
        fs::create_dir_all(p.join("net")).expect("fixture files");
        fs::create_dir_all(p.join("sys/fs")).expect("fixture files");
        fs::create_dir_all(p.join("pressure")).expect("fixture files");
        fs::copy(format!("{fx}/odd/stat"), p.join("stat")).expect("fixture files");
        fs::copy(format!("{fx}/live/meminfo"), p.join("meminfo")).expect("fixture files");
        fs::copy(format!("{fx}/live/loadavg"), p.join("loadavg")).expect("fixture files");
        fs::copy(format!("{fx}/live/uptime"), p.join("uptime")).expect("fixture files");
        fs::copy(format!("{fx}/live/file-nr"), p.join("sys/fs/file-nr")).expect("fixture files");
        fs::copy(format!("{fx}/odd/diskstats"), p.join("diskstats")).expect("fixture files");
        fs::copy(format!("{fx}/odd/netdev"), p.join("net/dev")).expect("fixture files");
        // io and memory pressure files are missing on purpose.
        fs::copy(
            format!("{fx}/odd/psi_cpu_some_only"),
            p.join("pressure/cpu"),
        )
        .expect("test value");
        dir
    }

    fn bump(path: &std::path::Path, from: &str, to: &str) {
        let text = fs::read_to_string(path).expect("fixture files");
        assert!(text.contains(from), "{from} not in {}", path.display());
        fs::write(path, text.replacen(from, to, 1)).expect("fixture files");
    }

    #[test]
    fn first_tick_is_a_baseline_then_rates_follow() {
        let proc = fake_proc();
        let sys = tempfile::tempdir().expect("fixture files");
        let part = sys.path().join("class/block/nvme0n1p1");
        fs::create_dir_all(&part).expect("fixture files");
        fs::write(part.join("partition"), "1\n").expect("fixture files");
        let mut s = NodeSampler::new(proc.path().into(), sys.path().into());
        let t0 = Instant::now();
        let first = s.tick(1, t0);
        assert!(first.node.is_none());
        assert!(first.disks.is_empty() && first.interfaces.is_empty());
        assert!(first.errors.is_empty(), "{:?}", first.errors);

        let p = proc.path();
        // 10 s later: 2000 ticks (4 cores), 1000 of them user.
        bump(
            &p.join("stat"),
            "cpu  1000 20 300 4000",
            "cpu  2000 20 300 5000",
        );
        bump(
            &p.join("diskstats"),
            "sda 10 0 20 0 30 0 40",
            "sda 20 0 5140 0 30 0 40",
        );
        // eth0.100's received bytes went backwards (counter reset).
        bump(&p.join("net/dev"), "eth0.100:123456789012", "eth0.100:5");
        bump(&p.join("net/dev"), "veth-ab12: 10 1", "veth-ab12: 1010 11");
        let second = s.tick(2, t0 + Duration::from_secs(10));
        assert!(second.errors.is_empty(), "{:?}", second.errors);
        let node = second.node.expect("test value");
        assert_eq!(node.ts_ms, 2);
        assert_eq!(node.cpu_cores, 4);
        assert_eq!(node.cpu_busy_pct, 50.0);
        assert_eq!(node.cpu_user_pct, 50.0);
        assert_eq!(node.psi_cpu_some, Some(1.5));
        assert_eq!(node.psi_cpu_full, None);
        assert_eq!(node.psi_io_some, None);
        assert_eq!(node.psi_memory_full, None);
        assert_eq!(node.open_fds, 623);
        assert_eq!(node.mem_total_bytes, 24_684_092 * 1024);

        let disks: Vec<&str> = second.disks.iter().map(|d| d.device.as_str()).collect();
        assert_eq!(
            disks,
            ["nvme0n1", "sda", "dm-0"],
            "the partition is left out"
        );
        let sda = &second.disks[1];
        assert_eq!(sda.read_bytes_per_s, 512.0 * 512.0);
        assert_eq!(sda.reads_per_s, 1.0);
        assert_eq!(sda.writes_per_s, 0.0);

        let eth = &second.interfaces[0];
        assert_eq!(eth.interface, "eth0.100");
        assert_eq!(eth.rx_bytes_per_s, 0.0, "a counter that went back gives 0");
        let veth = &second.interfaces[1];
        assert_eq!(veth.rx_bytes_per_s, 100.0);
        assert_eq!(veth.rx_packets_per_s, 1.0);
    }

    #[test]
    fn unreadable_core_file_drops_the_node_sample_and_says_which() {
        let proc = fake_proc();
        let mut s = NodeSampler::new(proc.path().into(), PathBuf::from("/nonexistent"));
        s.tick(1, Instant::now());
        fs::remove_file(proc.path().join("meminfo")).expect("fixture files");
        let t = s.tick(2, Instant::now());
        assert!(t.node.is_none());
        let what: Vec<&str> = t.errors.iter().map(|e| e.what).collect();
        assert_eq!(what, ["meminfo"]);
        assert!(!t.interfaces.is_empty(), "other sources are still sampled");
    }

    #[test]
    fn live_proc_gives_plausible_values() {
        let mut s = NodeSampler::new("/proc".into(), "/sys".into());
        let t0 = Instant::now();
        s.tick(1, t0);
        std::thread::sleep(Duration::from_millis(50));
        let t = s.tick(2, Instant::now());
        let node = t.node.expect("node sample of the live /proc");
        let meminfo = fs::read_to_string("/proc/meminfo").expect("fixture files");
        let total_kb: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("test value");
        assert_eq!(node.mem_total_bytes, total_kb * 1024);
        assert!(node.cpu_cores >= 1);
        for pct in [
            node.cpu_busy_pct,
            node.cpu_user_pct,
            node.cpu_system_pct,
            node.cpu_iowait_pct,
            node.cpu_steal_pct,
            node.mem_used_pct,
        ] {
            assert!((0.0..=100.0).contains(&pct), "{pct} in {node:?}");
        }
        assert!(node.mem_available_bytes <= node.mem_total_bytes);
        assert!(node.tasks_total >= node.tasks_running && node.tasks_total >= 1);
        assert!(node.uptime_s > 0 && node.open_fds > 0);
    }
}
