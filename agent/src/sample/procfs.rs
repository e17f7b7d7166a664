//! Parsers of the node's procfs files. Each takes the file's text and returns
//! plain numbers; lines it does not understand are skipped, so a kernel that
//! adds a field or a line does not break sampling.

/// The aggregate `cpu` line of `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

impl CpuTimes {
    /// Guest time is already inside user and nice, so it is not added again.
    fn total(&self) -> u64 {
        self.user
            + self.nice
            + self.system
            + self.idle
            + self.iowait
            + self.irq
            + self.softirq
            + self.steal
    }
}

/// `/proc/stat`: the aggregate CPU times and the number of online CPUs (one
/// `cpuN` line each).
pub fn parse_stat(text: &str) -> Option<(CpuTimes, u32)> {
    let mut times = None;
    let mut cores = 0u32;
    for line in text.lines() {
        let mut f = line.split_ascii_whitespace();
        match f.next() {
            Some("cpu") => {
                let mut n = f.map(|v| v.parse::<u64>().unwrap_or(0));
                let mut next = || n.next().unwrap_or(0);
                times = Some(CpuTimes {
                    user: next(),
                    nice: next(),
                    system: next(),
                    idle: next(),
                    iowait: next(),
                    irq: next(),
                    softirq: next(),
                    steal: next(),
                });
            }
            Some(name) if name.starts_with("cpu") => cores += 1,
            _ => {}
        }
    }
    times.map(|t| (t, cores.max(1)))
}

/// CPU shares between two readings, each 0-100: busy (neither idle nor
/// iowait), user (user + nice), system (system + irq + softirq), iowait,
/// steal. All 0 when any counter went backwards or no time passed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuPct {
    pub busy: f64,
    pub user: f64,
    pub system: f64,
    pub iowait: f64,
    pub steal: f64,
}

pub fn cpu_pct(prev: &CpuTimes, cur: &CpuTimes) -> CpuPct {
    let pairs = [
        (prev.user, cur.user),
        (prev.nice, cur.nice),
        (prev.system, cur.system),
        (prev.idle, cur.idle),
        (prev.iowait, cur.iowait),
        (prev.irq, cur.irq),
        (prev.softirq, cur.softirq),
        (prev.steal, cur.steal),
    ];
    if pairs.iter().any(|(p, c)| c < p) {
        return CpuPct::default();
    }
    let total = cur.total() - prev.total();
    if total == 0 {
        return CpuPct::default();
    }
    let pct = |d: u64| (d as f64 * 100.0 / total as f64).clamp(0.0, 100.0);
    let d = |f: fn(&CpuTimes) -> u64| f(cur) - f(prev);
    CpuPct {
        busy: pct(total - d(|t| t.idle) - d(|t| t.iowait)),
        user: pct(d(|t| t.user) + d(|t| t.nice)),
        system: pct(d(|t| t.system) + d(|t| t.irq) + d(|t| t.softirq)),
        iowait: pct(d(|t| t.iowait)),
        steal: pct(d(|t| t.steal)),
    }
}

/// `/proc/loadavg`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LoadAvg {
    pub load1: f64,
    pub load5: f64,
    pub load15: f64,
    pub running: u32,
    pub total: u32,
}

pub fn parse_loadavg(text: &str) -> Option<LoadAvg> {
    let mut f = text.split_ascii_whitespace();
    let load1 = f.next()?.parse().ok()?;
    let load5 = f.next()?.parse().ok()?;
    let load15 = f.next()?.parse().ok()?;
    let (running, total) = f.next()?.split_once('/')?;
    Some(LoadAvg {
        load1,
        load5,
        load15,
        running: running.parse().ok()?,
        total: total.parse().ok()?,
    })
}

/// `/proc/meminfo`, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemInfo {
    pub total: u64,
    pub available: u64,
    pub swap_total: u64,
    pub swap_free: u64,
}

pub fn parse_meminfo(text: &str) -> Option<MemInfo> {
    let (mut total, mut available, mut swap_total, mut swap_free) = (None, None, 0, 0);
    let (mut free, mut buffers, mut cached) = (0, 0, 0);
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let mut f = rest.split_ascii_whitespace();
        let Some(Ok(v)) = f.next().map(str::parse::<u64>) else {
            continue;
        };
        let bytes = if f.next() == Some("kB") {
            v.saturating_mul(1024)
        } else {
            v
        };
        match key {
            "MemTotal" => total = Some(bytes),
            "MemAvailable" => available = Some(bytes),
            "MemFree" => free = bytes,
            "Buffers" => buffers = bytes,
            "Cached" => cached = bytes,
            "SwapTotal" => swap_total = bytes,
            "SwapFree" => swap_free = bytes,
            _ => {}
        }
    }
    Some(MemInfo {
        total: total?,
        // Kernels before 3.14 have no MemAvailable: estimate it as free(1) did.
        available: available.unwrap_or(free + buffers + cached),
        swap_total,
        swap_free,
    })
}

/// Share of memory in use, 0-100.
pub fn mem_used_pct(m: &MemInfo) -> f64 {
    if m.total == 0 {
        return 0.0;
    }
    (m.total.saturating_sub(m.available) as f64 * 100.0 / m.total as f64).clamp(0.0, 100.0)
}

/// One line of `/proc/diskstats`: sectors are 512 bytes whatever the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskCounters {
    pub device: String,
    pub reads: u64,
    pub read_sectors: u64,
    pub writes: u64,
    pub write_sectors: u64,
}

/// Every device of `/proc/diskstats` except loop, ram, zram and floppy
/// devices (never real I/O to a disk). Partitions are told apart later, from
/// sysfs.
pub fn parse_diskstats(text: &str) -> Vec<DiskCounters> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_ascii_whitespace().collect();
            if f.len() < 10 {
                return None;
            }
            let device = f[2];
            if ["loop", "ram", "zram", "fd"]
                .iter()
                .any(|p| device.starts_with(p))
            {
                return None;
            }
            let n = |i: usize| f[i].parse::<u64>().ok();
            Some(DiskCounters {
                device: device.to_owned(),
                reads: n(3)?,
                read_sectors: n(5)?,
                writes: n(7)?,
                write_sectors: n(9)?,
            })
        })
        .collect()
}

/// One interface of `/proc/net/dev`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetCounters {
    pub interface: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_drops: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_drops: u64,
}

/// Every interface but loopback. The name ends at the last ':' of the line
/// (numbers have none, names may have dots and dashes, and a long counter
/// can touch the colon).
pub fn parse_netdev(text: &str) -> Vec<NetCounters> {
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.rsplit_once(':')?;
            let name = name.trim();
            if name.is_empty() || name == "lo" || name.contains('|') {
                return None;
            }
            let v: Vec<u64> = rest
                .split_ascii_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            if v.len() < 12 {
                return None;
            }
            Some(NetCounters {
                interface: name.to_owned(),
                rx_bytes: v[0],
                rx_packets: v[1],
                rx_errors: v[2],
                rx_drops: v[3],
                tx_bytes: v[8],
                tx_packets: v[9],
                tx_errors: v[10],
                tx_drops: v[11],
            })
        })
        .collect()
}

/// `avg10` of the `some` and `full` lines of a `/proc/pressure/*` file.
pub fn parse_psi(text: &str) -> (Option<f64>, Option<f64>) {
    let (mut some, mut full) = (None, None);
    for line in text.lines() {
        let mut f = line.split_ascii_whitespace();
        let slot = match f.next() {
            Some("some") => &mut some,
            Some("full") => &mut full,
            _ => continue,
        };
        *slot = f
            .find_map(|kv| kv.strip_prefix("avg10="))
            .and_then(|v| v.parse().ok());
    }
    (some, full)
}

/// First field of `/proc/sys/fs/file-nr`: allocated file handles.
pub fn parse_file_nr(text: &str) -> Option<u64> {
    text.split_ascii_whitespace().next()?.parse().ok()
}

/// Whole seconds since boot, from `/proc/uptime`.
pub fn parse_uptime(text: &str) -> Option<u64> {
    let secs: f64 = text.split_ascii_whitespace().next()?.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then_some(secs as u64)
}

/// One mount of a `mountinfo` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `major:minor`: bind mounts of one filesystem share it.
    pub dev: String,
    pub mountpoint: String,
    pub fstype: String,
    pub source: String,
}

/// Types with no disk of their own behind them. tmpfs is among them: a
/// Kubernetes node has one per secret volume, hundreds of them.
const PSEUDO_FS: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fusectl",
    "hugetlbfs",
    "mqueue",
    "nsfs",
    "overlay",
    "proc",
    "pstore",
    "ramfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tmpfs",
    "tracefs",
];

/// The real filesystems of a `mountinfo` file, each once: a filesystem
/// mounted again (bind mounts, Kubernetes volume mounts) is reported at its
/// first mount point only.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut out: Vec<Mount> = Vec::new();
    for line in text.lines() {
        let Some(m) = parse_mount_line(line) else {
            continue;
        };
        if PSEUDO_FS.contains(&m.fstype.as_str()) || out.iter().any(|o| o.dev == m.dev) {
            continue;
        }
        out.push(m);
    }
    out
}

fn parse_mount_line(line: &str) -> Option<Mount> {
    // id parent major:minor root mountpoint options [optional...] - fstype source superopts
    let (left, right) = line.split_once(" - ")?;
    let mut l = left.split(' ');
    let dev = l.nth(2)?;
    let mountpoint = l.nth(1)?;
    let mut r = right.split(' ');
    let fstype = r.next()?;
    let source = r.next().unwrap_or("");
    Some(Mount {
        dev: dev.to_owned(),
        mountpoint: unescape_octal(mountpoint),
        fstype: fstype.to_owned(),
        source: unescape_octal(source),
    })
}

/// The kernel writes space, tab, newline and backslash in mount paths as
/// `\040`, `\011`, `\012` and `\134`.
fn unescape_octal(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Per-second rate of a counter over `secs`; 0 when it went backwards.
pub fn rate(prev: u64, cur: u64, secs: f64) -> f64 {
    if secs <= 0.0 || cur < prev {
        return 0.0;
    }
    (cur - prev) as f64 / secs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!(
            "{}/tests/fixtures/sample/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn stat_of_this_machine_and_of_a_many_core_host() {
        let (t, cores) = parse_stat(&fixture("live/stat")).expect("parses");
        assert_eq!(cores, 2);
        assert_eq!(t.user, 986_269);
        assert_eq!(t.steal, 4_817);
        let (t, cores) = parse_stat(&fixture("odd/stat")).expect("parses");
        assert_eq!(cores, 4);
        assert_eq!(t.iowait, 500);
        assert_eq!(parse_stat("intr 1 2 3\n"), None);
    }

    #[test]
    fn cpu_pct_splits_modes_and_a_backwards_counter_gives_zero() {
        let prev = CpuTimes {
            user: 100,
            idle: 100,
            ..CpuTimes::default()
        };
        let cur = CpuTimes {
            user: 150,
            nice: 10,
            system: 20,
            idle: 200,
            iowait: 10,
            steal: 10,
            ..CpuTimes::default()
        };
        let p = cpu_pct(&prev, &cur);
        // 200 ticks passed: 90 busy (60 user, 20 system, 10 steal).
        assert_eq!(p.busy, 45.0);
        assert_eq!(p.user, 30.0);
        assert_eq!(p.system, 10.0);
        assert_eq!(p.iowait, 5.0);
        assert_eq!(p.steal, 5.0);
        // After a reboot every counter restarts lower.
        assert_eq!(cpu_pct(&cur, &prev), CpuPct::default());
        assert_eq!(cpu_pct(&cur, &cur), CpuPct::default());
    }

    #[test]
    fn loadavg() {
        let l = parse_loadavg(&fixture("live/loadavg")).expect("parses");
        assert_eq!(l.load1, 1.35);
        assert_eq!(l.load15, 1.41);
        assert_eq!((l.running, l.total), (4, 108));
        assert_eq!(parse_loadavg("1.0 2.0"), None);
    }

    #[test]
    fn meminfo_in_bytes_and_without_memavailable() {
        let m = parse_meminfo(&fixture("live/meminfo")).expect("parses");
        assert_eq!(m.total, 24_684_092 * 1024);
        assert_eq!(m.available, 23_872_856 * 1024);
        let old = parse_meminfo(&fixture("odd/meminfo_no_available")).expect("parses");
        assert_eq!(old.total, 1000 * 1024);
        assert_eq!(old.available, (100 + 50 + 250) * 1024);
        assert_eq!(old.swap_total, 2048 * 1024);
        assert_eq!(old.swap_free, 1024 * 1024);
        assert_eq!(mem_used_pct(&old), 60.0);
        assert_eq!(parse_meminfo("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn diskstats_skip_loop_ram_zram() {
        let d = parse_diskstats(&fixture("live/diskstats"));
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].device, "vda");
        assert_eq!(d[0].reads, 1_652_678);
        assert_eq!(d[0].read_sectors, 76_130_146);
        assert_eq!(d[0].writes, 227_813);
        assert_eq!(d[0].write_sectors, 256_401_584);
        let odd = parse_diskstats(&fixture("odd/diskstats"));
        let names: Vec<&str> = odd.iter().map(|d| d.device.as_str()).collect();
        assert_eq!(names, ["nvme0n1", "nvme0n1p1", "sda", "dm-0"]);
    }

    #[test]
    fn netdev_names_with_dots_dashes_and_touching_colons() {
        let n = parse_netdev(&fixture("live/netdev"));
        let names: Vec<&str> = n.iter().map(|i| i.interface.as_str()).collect();
        assert_eq!(names, ["ifb0", "ifb1", "eth0"]);
        assert_eq!(n[2].rx_bytes, 495_795_452);
        assert_eq!(n[2].tx_packets, 7_231);
        let odd = parse_netdev(&fixture("odd/netdev"));
        let names: Vec<&str> = odd.iter().map(|i| i.interface.as_str()).collect();
        assert_eq!(names, ["eth0.100", "veth-ab12", "cali1a2b3c4d5e6", "bond0"]);
        assert_eq!(odd[0].rx_bytes, 123_456_789_012);
        assert_eq!(odd[0].rx_errors, 3);
        assert_eq!(odd[0].rx_drops, 4);
        assert_eq!(odd[0].tx_bytes, 98_765);
        assert_eq!(odd[0].tx_errors, 7);
        assert_eq!(odd[0].tx_drops, 8);
    }

    #[test]
    fn psi_some_and_full() {
        assert_eq!(
            parse_psi(&fixture("live/psi_cpu")),
            (Some(20.33), Some(0.0))
        );
        // Kernels before 5.13 have no `full` line for cpu.
        assert_eq!(
            parse_psi(&fixture("odd/psi_cpu_some_only")),
            (Some(1.5), None)
        );
        assert_eq!(parse_psi(""), (None, None));
    }

    #[test]
    fn file_nr_and_uptime() {
        assert_eq!(parse_file_nr(&fixture("live/file-nr")), Some(623));
        assert_eq!(parse_uptime(&fixture("live/uptime")), Some(9_885));
        assert_eq!(parse_uptime("-1 2"), None);
    }

    #[test]
    fn mountinfo_keeps_real_filesystems_once() {
        let m = parse_mountinfo(&fixture("live/mountinfo"));
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!(m[0].mountpoint, "/");
        assert_eq!(m[0].fstype, "ext4");
        assert_eq!(m[0].source, "/dev/vda");
        let odd = parse_mountinfo(&fixture("odd/mountinfo"));
        let points: Vec<&str> = odd.iter().map(|m| m.mountpoint.as_str()).collect();
        assert_eq!(
            points,
            ["/", "/srv/web sites", "/mnt/nfs", "/var/lib/a\tb\\c"],
            "{odd:?}"
        );
        assert_eq!(odd[2].fstype, "nfs4");
        assert_eq!(odd[2].source, "files:/export");
    }

    #[test]
    fn rates_never_go_negative() {
        assert_eq!(rate(100, 300, 10.0), 20.0);
        assert_eq!(rate(300, 100, 10.0), 0.0);
        assert_eq!(rate(1, 2, 0.0), 0.0);
    }
}
