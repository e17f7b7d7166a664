//! Validation of the sample kinds (`livehead/v1/samples.proto`): one
//! `check_<kind>` per kind, from the wire message to its row, or the first
//! thing wrong named `<kind>.<field>`.
//!
//! Rules: numbers are finite and not negative; percentages of a whole are
//! 0–100; CPU of a pod or a site's processes (100 = one core) at most
//! [`MAX_CPU_PCT`]; names are non-empty, at most `limits.max_name_bytes`,
//! without control characters; sites are host names, stored lower case like
//! probe sites; `ts_ms` within the limits of every record (`check_ts`).

use livehead_common::host::check_host_name;
use livehead_proto::v1::record::Kind;
use livehead_proto::v1::{
    DiskSample, FilesystemSample, InterfaceSample, NodeSample, PodSample, ServiceState,
    SiteDiskSample, SiteProcessSample,
};

use super::{Invalid, check_text, check_ts, invalid};
use crate::config::Limits;
use crate::store::Rows;
use crate::store::samples::{
    DiskRow, FilesystemRow, InterfaceRow, NodeRow, PodRow, ServiceRow, SiteDiskRow, SiteProcessRow,
};

/// Highest CPU % of a pod or of a site's processes: 4,096 cores busy.
pub const MAX_CPU_PCT: f64 = 100.0 * 4096.0;

/// Checks a sample, alert, watchdog or heartbeat record and pushes its row to `rows`: `Ok(true)`.
/// `Ok(false)` for a probe, which is not a sample (see `check_probe`).
pub fn check_sample(
    kind: &Kind,
    agent: &str,
    now_ms: u64,
    limits: &Limits,
    rows: &mut Rows,
) -> Result<bool, Invalid> {
    let ctx = Ctx {
        agent,
        now_ms,
        limits,
    };
    match kind {
        Kind::Probe(_) => return Ok(false),
        Kind::Node(s) => rows.nodes.push(check_node(s, &ctx)?),
        Kind::Filesystem(s) => rows.filesystems.push(check_filesystem(s, &ctx)?),
        Kind::Disk(s) => rows.disks.push(check_disk(s, &ctx)?),
        Kind::Interface(s) => rows.interfaces.push(check_interface(s, &ctx)?),
        Kind::Pod(s) => rows.pods.push(check_pod(s, &ctx)?),
        Kind::SiteDisk(s) => rows.site_disks.push(check_site_disk(s, &ctx)?),
        Kind::SiteProcess(s) => rows.site_processes.push(check_site_process(s, &ctx)?),
        Kind::Service(s) => rows.services.push(check_service(s, &ctx)?),
        Kind::Alert(a) => rows.alerts.push(super::alerts::check_alert(a, &ctx)?),
        Kind::Delivery(d) => rows
            .deliveries
            .push(super::alerts::check_delivery(d, &ctx)?),
        Kind::Watchdog(w) => rows
            .watchdog
            .push(super::watchdog::check_watchdog(w, &ctx)?),
        Kind::HeartbeatCheck(c) => rows
            .heartbeat_checks
            .push(super::heartbeats::check_check(c, &ctx)?),
        Kind::HeartbeatPing(p) => rows
            .heartbeat_pings
            .push(super::heartbeats::check_ping(p, &ctx)?),
        Kind::HeartbeatState(s) => rows
            .heartbeat_states
            .push(super::heartbeats::check_state(s, &ctx)?),
    }
    Ok(true)
}

/// What every check needs besides the sample.
pub struct Ctx<'a> {
    /// The sending agent, stored as the row's `node`.
    pub agent: &'a str,
    pub now_ms: u64,
    pub limits: &'a Limits,
}

impl Ctx<'_> {
    pub(super) fn ts(&self, field: &'static str, ts: u64) -> Result<u64, Invalid> {
        check_ts(ts, self.now_ms, self.limits).map_err(|e| Invalid { field, ..e })?;
        Ok(ts)
    }

    pub(super) fn name(&self, field: &'static str, value: &str) -> Result<String, Invalid> {
        if value.is_empty() {
            return Err(invalid(field, "empty"));
        }
        check_text(field, value, self.limits.max_name_bytes)?;
        Ok(value.to_owned())
    }
}

/// A finite number, not negative.
fn amount(field: &'static str, value: f64) -> Result<f64, Invalid> {
    range(field, value, f64::MAX)
}

/// A share of a whole, 0–100.
fn pct(field: &'static str, value: f64) -> Result<f64, Invalid> {
    range(field, value, 100.0)
}

fn opt_pct(field: &'static str, value: Option<f64>) -> Result<Option<f64>, Invalid> {
    value.map(|v| pct(field, v)).transpose()
}

fn range(field: &'static str, value: f64, max: f64) -> Result<f64, Invalid> {
    if !value.is_finite() {
        return Err(invalid(field, format!("{value} is not a number")));
    }
    if !(0.0..=max).contains(&value) {
        return Err(invalid(field, format!("{value} is not within 0-{max}")));
    }
    Ok(value)
}

/// A site as probe sites are: a host name, stored lower case.
pub(super) fn site(field: &'static str, value: &str) -> Result<String, Invalid> {
    check_host_name(value).map_err(|e| invalid(field, e.to_string()))?;
    Ok(value.to_ascii_lowercase())
}

pub fn check_node(s: &NodeSample, ctx: &Ctx<'_>) -> Result<NodeRow, Invalid> {
    Ok(NodeRow {
        node: ctx.agent.into(),
        ts: ctx.ts("node.ts_ms", s.ts_ms)?,
        cpu_cores: s.cpu_cores,
        cpu_busy_pct: pct("node.cpu_busy_pct", s.cpu_busy_pct)?,
        cpu_user_pct: pct("node.cpu_user_pct", s.cpu_user_pct)?,
        cpu_system_pct: pct("node.cpu_system_pct", s.cpu_system_pct)?,
        cpu_iowait_pct: pct("node.cpu_iowait_pct", s.cpu_iowait_pct)?,
        cpu_steal_pct: pct("node.cpu_steal_pct", s.cpu_steal_pct)?,
        load1: amount("node.load1", s.load1)?,
        load5: amount("node.load5", s.load5)?,
        load15: amount("node.load15", s.load15)?,
        tasks_running: s.tasks_running,
        tasks_total: s.tasks_total,
        mem_total_bytes: s.mem_total_bytes,
        mem_available_bytes: s.mem_available_bytes,
        mem_used_pct: pct("node.mem_used_pct", s.mem_used_pct)?,
        swap_total_bytes: s.swap_total_bytes,
        swap_free_bytes: s.swap_free_bytes,
        psi_cpu_some: opt_pct("node.psi_cpu_some", s.psi_cpu_some)?,
        psi_cpu_full: opt_pct("node.psi_cpu_full", s.psi_cpu_full)?,
        psi_io_some: opt_pct("node.psi_io_some", s.psi_io_some)?,
        psi_io_full: opt_pct("node.psi_io_full", s.psi_io_full)?,
        psi_memory_some: opt_pct("node.psi_memory_some", s.psi_memory_some)?,
        psi_memory_full: opt_pct("node.psi_memory_full", s.psi_memory_full)?,
        open_fds: s.open_fds,
        uptime_s: s.uptime_s,
    })
}

pub fn check_filesystem(s: &FilesystemSample, ctx: &Ctx<'_>) -> Result<FilesystemRow, Invalid> {
    Ok(FilesystemRow {
        node: ctx.agent.into(),
        ts: ctx.ts("filesystem.ts_ms", s.ts_ms)?,
        mountpoint: ctx.name("filesystem.mountpoint", &s.mountpoint)?,
        device: ctx.name("filesystem.device", &s.device)?,
        fstype: ctx.name("filesystem.fstype", &s.fstype)?,
        size_bytes: s.size_bytes,
        used_bytes: s.used_bytes,
        free_bytes: s.free_bytes,
        used_pct: pct("filesystem.used_pct", s.used_pct)?,
        inodes_total: s.inodes_total,
        inodes_used: s.inodes_used,
        inodes_free: s.inodes_free,
        inodes_used_pct: pct("filesystem.inodes_used_pct", s.inodes_used_pct)?,
    })
}

pub fn check_disk(s: &DiskSample, ctx: &Ctx<'_>) -> Result<DiskRow, Invalid> {
    Ok(DiskRow {
        node: ctx.agent.into(),
        ts: ctx.ts("disk.ts_ms", s.ts_ms)?,
        device: ctx.name("disk.device", &s.device)?,
        read_bytes_per_s: amount("disk.read_bytes_per_s", s.read_bytes_per_s)?,
        write_bytes_per_s: amount("disk.write_bytes_per_s", s.write_bytes_per_s)?,
        reads_per_s: amount("disk.reads_per_s", s.reads_per_s)?,
        writes_per_s: amount("disk.writes_per_s", s.writes_per_s)?,
    })
}

pub fn check_interface(s: &InterfaceSample, ctx: &Ctx<'_>) -> Result<InterfaceRow, Invalid> {
    Ok(InterfaceRow {
        node: ctx.agent.into(),
        ts: ctx.ts("interface.ts_ms", s.ts_ms)?,
        interface: ctx.name("interface.interface", &s.interface)?,
        rx_bytes_per_s: amount("interface.rx_bytes_per_s", s.rx_bytes_per_s)?,
        tx_bytes_per_s: amount("interface.tx_bytes_per_s", s.tx_bytes_per_s)?,
        rx_packets_per_s: amount("interface.rx_packets_per_s", s.rx_packets_per_s)?,
        tx_packets_per_s: amount("interface.tx_packets_per_s", s.tx_packets_per_s)?,
        rx_errors_per_s: amount("interface.rx_errors_per_s", s.rx_errors_per_s)?,
        tx_errors_per_s: amount("interface.tx_errors_per_s", s.tx_errors_per_s)?,
        rx_drops_per_s: amount("interface.rx_drops_per_s", s.rx_drops_per_s)?,
        tx_drops_per_s: amount("interface.tx_drops_per_s", s.tx_drops_per_s)?,
    })
}

pub fn check_pod(s: &PodSample, ctx: &Ctx<'_>) -> Result<PodRow, Invalid> {
    Ok(PodRow {
        node: ctx.agent.into(),
        ts: ctx.ts("pod.ts_ms", s.ts_ms)?,
        pod: ctx.name("pod.pod", &s.pod)?,
        cgroup: ctx.name("pod.cgroup", &s.cgroup)?,
        cpu_pct: range("pod.cpu_pct", s.cpu_pct, MAX_CPU_PCT)?,
        cpu_throttled_us: s.cpu_throttled_us,
        memory_current_bytes: s.memory_current_bytes,
        memory_max_bytes: s.memory_max_bytes,
        memory_working_set_bytes: s.memory_working_set_bytes,
        oom_kills: s.oom_kills,
        io_read_bytes_per_s: amount("pod.io_read_bytes_per_s", s.io_read_bytes_per_s)?,
        io_write_bytes_per_s: amount("pod.io_write_bytes_per_s", s.io_write_bytes_per_s)?,
        io_reads_per_s: amount("pod.io_reads_per_s", s.io_reads_per_s)?,
        io_writes_per_s: amount("pod.io_writes_per_s", s.io_writes_per_s)?,
        pids_current: s.pids_current,
        pids_max: s.pids_max,
    })
}

pub fn check_site_disk(s: &SiteDiskSample, ctx: &Ctx<'_>) -> Result<SiteDiskRow, Invalid> {
    Ok(SiteDiskRow {
        node: ctx.agent.into(),
        ts: ctx.ts("site_disk.ts_ms", s.ts_ms)?,
        site: site("site_disk.site", &s.site)?,
        disk_bytes: s.disk_bytes,
        file_count: s.file_count,
        walk_ms: s.walk_ms,
        truncated: s.truncated,
    })
}

pub fn check_site_process(s: &SiteProcessSample, ctx: &Ctx<'_>) -> Result<SiteProcessRow, Invalid> {
    Ok(SiteProcessRow {
        node: ctx.agent.into(),
        ts: ctx.ts("site_process.ts_ms", s.ts_ms)?,
        site: site("site_process.site", &s.site)?,
        user: ctx.name("site_process.user", &s.user)?,
        processes: s.processes,
        cpu_pct: range("site_process.cpu_pct", s.cpu_pct, MAX_CPU_PCT)?,
        rss_bytes: s.rss_bytes,
    })
}

/// A unit's `site` may be empty: the unit belongs to no site.
pub fn check_service(s: &ServiceState, ctx: &Ctx<'_>) -> Result<ServiceRow, Invalid> {
    let unit_site = if s.site.is_empty() {
        String::new()
    } else {
        site("service.site", &s.site)?
    };
    Ok(ServiceRow {
        node: ctx.agent.into(),
        ts: ctx.ts("service.ts_ms", s.ts_ms)?,
        unit: ctx.name("service.unit", &s.unit)?,
        site: unit_site,
        active_state: ctx.name("service.active_state", &s.active_state)?,
        sub_state: ctx.name("service.sub_state", &s.sub_state)?,
        main_pid: s.main_pid,
        memory_bytes: s.memory_bytes,
        cpu_time_us: s.cpu_time_us,
        restarts: s.restarts,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use livehead_proto::v1::ProbeResult;

    const NOW: u64 = 1_800_000_000_000;

    fn ctx(limits: &Limits) -> Ctx<'_> {
        Ctx {
            agent: "node-1",
            now_ms: NOW,
            limits,
        }
    }

    /// A change to a good record, and the field it makes invalid.
    pub(crate) type Case<S> = (fn(&mut S), &'static str);

    /// Runs `check` on `good` mutated by each case, expecting the named
    /// field (the sample kinds' tests and the alert records').
    pub(crate) fn refused<S: Clone, R: std::fmt::Debug>(
        good: &S,
        check: fn(&S, &Ctx<'_>) -> Result<R, Invalid>,
        cases: Vec<Case<S>>,
    ) {
        let limits = Limits::default();
        check(good, &ctx(&limits)).expect("the good record is valid");
        for (mutate, field) in cases {
            let mut sample = good.clone();
            mutate(&mut sample);
            let err = check(&sample, &ctx(&limits)).expect_err(field);
            assert_eq!(err.field, field, "{err:?}");
            assert!(!err.reason.is_empty());
        }
    }

    fn node() -> NodeSample {
        NodeSample {
            ts_ms: NOW - 1000,
            cpu_cores: 8,
            cpu_busy_pct: 100.0,
            cpu_user_pct: 60.0,
            mem_total_bytes: 16 << 30,
            mem_available_bytes: 8 << 30,
            mem_used_pct: 50.0,
            load1: 12.5,
            psi_io_some: Some(0.0),
            ..Default::default()
        }
    }

    #[test]
    fn node_samples() {
        let limits = Limits::default();
        let row = check_node(&node(), &ctx(&limits)).expect("valid");
        assert_eq!(
            (
                row.node.as_str(),
                row.cpu_busy_pct,
                row.psi_io_some,
                row.psi_cpu_some
            ),
            ("node-1", 100.0, Some(0.0), None)
        );
        refused(
            &node(),
            check_node,
            vec![
                (|s| s.cpu_busy_pct = 100.5, "node.cpu_busy_pct"),
                (|s| s.cpu_steal_pct = -0.1, "node.cpu_steal_pct"),
                (|s| s.cpu_user_pct = f64::NAN, "node.cpu_user_pct"),
                (|s| s.load5 = f64::INFINITY, "node.load5"),
                (|s| s.load1 = -1.0, "node.load1"),
                (|s| s.mem_used_pct = 101.0, "node.mem_used_pct"),
                (
                    |s| s.psi_memory_full = Some(f64::NAN),
                    "node.psi_memory_full",
                ),
                (|s| s.psi_cpu_some = Some(-2.0), "node.psi_cpu_some"),
                (|s| s.ts_ms = NOW + 3_600_000, "node.ts_ms"),
                (|s| s.ts_ms = 5, "node.ts_ms"),
            ],
        );
    }

    #[test]
    fn filesystem_samples() {
        let good = FilesystemSample {
            ts_ms: NOW,
            mountpoint: "/var/lib/docker".into(),
            device: "/dev/sda1".into(),
            fstype: "ext4".into(),
            used_pct: 99.9,
            ..Default::default()
        };
        refused(
            &good,
            check_filesystem,
            vec![
                (|s| s.mountpoint = String::new(), "filesystem.mountpoint"),
                (|s| s.mountpoint = "/".repeat(513), "filesystem.mountpoint"),
                (|s| s.device = "sd\na".into(), "filesystem.device"),
                (|s| s.fstype = String::new(), "filesystem.fstype"),
                (|s| s.used_pct = 100.1, "filesystem.used_pct"),
                (
                    |s| s.inodes_used_pct = f64::NAN,
                    "filesystem.inodes_used_pct",
                ),
                (|s| s.ts_ms = 0, "filesystem.ts_ms"),
            ],
        );
    }

    #[test]
    fn disk_samples() {
        let good = DiskSample {
            ts_ms: NOW,
            device: "nvme0n1".into(),
            read_bytes_per_s: 1e9,
            ..Default::default()
        };
        refused(
            &good,
            check_disk,
            vec![
                (|s| s.device = String::new(), "disk.device"),
                (|s| s.reads_per_s = -1.0, "disk.reads_per_s"),
                (|s| s.write_bytes_per_s = f64::NAN, "disk.write_bytes_per_s"),
            ],
        );
    }

    #[test]
    fn interface_samples() {
        let good = InterfaceSample {
            ts_ms: NOW,
            interface: "eth0.100-vlan".into(),
            rx_bytes_per_s: 125e6,
            ..Default::default()
        };
        refused(
            &good,
            check_interface,
            vec![
                (|s| s.interface = String::new(), "interface.interface"),
                (|s| s.tx_drops_per_s = -3.0, "interface.tx_drops_per_s"),
                (
                    |s| s.rx_errors_per_s = f64::INFINITY,
                    "interface.rx_errors_per_s",
                ),
            ],
        );
    }

    #[test]
    fn pod_samples() {
        let good = PodSample {
            ts_ms: NOW,
            pod: "web-7d9f".into(),
            cgroup: "kubepods.slice/kubepods-pod1.slice".into(),
            // Two cores busy.
            cpu_pct: 200.0,
            ..Default::default()
        };
        refused(
            &good,
            check_pod,
            vec![
                (|s| s.pod = String::new(), "pod.pod"),
                (|s| s.cgroup = "x".repeat(600), "pod.cgroup"),
                (|s| s.cpu_pct = MAX_CPU_PCT + 1.0, "pod.cpu_pct"),
                (|s| s.cpu_pct = -5.0, "pod.cpu_pct"),
                (|s| s.io_writes_per_s = f64::NAN, "pod.io_writes_per_s"),
            ],
        );
    }

    #[test]
    fn site_disk_samples() {
        let limits = Limits::default();
        let good = SiteDiskSample {
            ts_ms: NOW,
            site: "Shop.Example.com".into(),
            disk_bytes: 5 << 30,
            file_count: 1_000_000,
            walk_ms: 900,
            truncated: true,
        };
        let row = check_site_disk(&good, &ctx(&limits)).expect("valid");
        assert_eq!(
            (row.site.as_str(), row.truncated),
            ("shop.example.com", true)
        );
        refused(
            &good,
            check_site_disk,
            vec![
                (|s| s.site = String::new(), "site_disk.site"),
                (|s| s.site = "bad site".into(), "site_disk.site"),
                (|s| s.ts_ms = NOW + 3_600_000, "site_disk.ts_ms"),
            ],
        );
    }

    #[test]
    fn site_process_samples() {
        let good = SiteProcessSample {
            ts_ms: NOW,
            site: "a.example".into(),
            user: "web_a".into(),
            processes: 12,
            cpu_pct: 350.0,
            rss_bytes: 1 << 30,
        };
        refused(
            &good,
            check_site_process,
            vec![
                (|s| s.site = "a/b".into(), "site_process.site"),
                (|s| s.user = String::new(), "site_process.user"),
                (|s| s.cpu_pct = f64::NAN, "site_process.cpu_pct"),
            ],
        );
    }

    #[test]
    fn service_states() {
        let limits = Limits::default();
        let good = ServiceState {
            ts_ms: NOW,
            unit: "php8.2-fpm.service".into(),
            site: String::new(),
            active_state: "active".into(),
            sub_state: "running".into(),
            main_pid: 1234,
            ..Default::default()
        };
        let row = check_service(&good, &ctx(&limits)).expect("no site is fine");
        assert_eq!(row.site, "");
        let mut with_site = good.clone();
        with_site.site = "A.example".into();
        let row = check_service(&with_site, &ctx(&limits)).expect("valid");
        assert_eq!(row.site, "a.example");
        refused(
            &good,
            check_service,
            vec![
                (|s| s.unit = String::new(), "service.unit"),
                (|s| s.site = "no spaces".into(), "service.site"),
                (|s| s.active_state = String::new(), "service.active_state"),
                (|s| s.sub_state = "run\u{7}".into(), "service.sub_state"),
            ],
        );
    }

    #[test]
    fn check_sample_pushes_sample_rows_and_leaves_probes() {
        let limits = Limits::default();
        let mut rows = Rows::default();
        let probe = Kind::Probe(ProbeResult::default());
        assert_eq!(
            check_sample(&probe, "a", NOW, &limits, &mut rows),
            Ok(false)
        );
        assert!(rows.is_empty());
        assert_eq!(
            check_sample(&Kind::Node(node()), "a", NOW, &limits, &mut rows),
            Ok(true)
        );
        let bad = Kind::Disk(DiskSample::default());
        let err = check_sample(&bad, "a", NOW, &limits, &mut rows).expect_err("no device");
        assert_eq!(err.field, "disk.ts_ms");
        assert_eq!((rows.nodes.len(), rows.len()), (1, 1));
        assert_eq!(rows.nodes[0].node, "a");
    }
}
