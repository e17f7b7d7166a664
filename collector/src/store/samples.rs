//! Rows of the sample kinds (what agents sample of their node, pods, sites
//! and services) and the reads `/stats` answers from. One struct per table;
//! fields mirror the proto messages of `livehead/v1/samples.proto`, with
//! `node` (the sending agent's identity) first and `ts` (unix ms) second.
//! They serialize to JSON as the `/stats` API shows them.

use serde::Serialize;

use super::row_digest;

/// One row's contribution to its batch marker's digest: see [`super::digest`].
/// Each kind hashes `ts` with one of its `UInt64` columns (ClickHouse's marker
/// views compute the same expression).
pub trait KindRow {
    fn digest(&self) -> u64;
    /// What the row holds in memory, strings included (queue bounds).
    fn heap_bytes(&self) -> usize;
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct NodeRow {
    pub node: String,
    pub ts: u64,
    pub cpu_cores: u32,
    pub cpu_busy_pct: f64,
    pub cpu_user_pct: f64,
    pub cpu_system_pct: f64,
    pub cpu_iowait_pct: f64,
    pub cpu_steal_pct: f64,
    pub load1: f64,
    pub load5: f64,
    pub load15: f64,
    pub tasks_running: u32,
    pub tasks_total: u32,
    pub mem_total_bytes: u64,
    pub mem_available_bytes: u64,
    pub mem_used_pct: f64,
    pub swap_total_bytes: u64,
    pub swap_free_bytes: u64,
    pub psi_cpu_some: Option<f64>,
    pub psi_cpu_full: Option<f64>,
    pub psi_io_some: Option<f64>,
    pub psi_io_full: Option<f64>,
    pub psi_memory_some: Option<f64>,
    pub psi_memory_full: Option<f64>,
    pub open_fds: u64,
    pub uptime_s: u64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct FilesystemRow {
    pub node: String,
    pub ts: u64,
    pub mountpoint: String,
    pub device: String,
    pub fstype: String,
    pub size_bytes: u64,
    pub used_bytes: u64,
    pub free_bytes: u64,
    pub used_pct: f64,
    pub inodes_total: u64,
    pub inodes_used: u64,
    pub inodes_free: u64,
    pub inodes_used_pct: f64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct DiskRow {
    pub node: String,
    pub ts: u64,
    pub device: String,
    pub read_bytes_per_s: f64,
    pub write_bytes_per_s: f64,
    pub reads_per_s: f64,
    pub writes_per_s: f64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct InterfaceRow {
    pub node: String,
    pub ts: u64,
    pub interface: String,
    pub rx_bytes_per_s: f64,
    pub tx_bytes_per_s: f64,
    pub rx_packets_per_s: f64,
    pub tx_packets_per_s: f64,
    pub rx_errors_per_s: f64,
    pub tx_errors_per_s: f64,
    pub rx_drops_per_s: f64,
    pub tx_drops_per_s: f64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct PodRow {
    pub node: String,
    pub ts: u64,
    pub pod: String,
    pub cgroup: String,
    pub cpu_pct: f64,
    pub cpu_throttled_us: u64,
    pub memory_current_bytes: u64,
    pub memory_max_bytes: u64,
    pub memory_working_set_bytes: u64,
    pub oom_kills: u64,
    pub io_read_bytes_per_s: f64,
    pub io_write_bytes_per_s: f64,
    pub io_reads_per_s: f64,
    pub io_writes_per_s: f64,
    pub pids_current: u64,
    pub pids_max: u64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct SiteDiskRow {
    pub node: String,
    pub ts: u64,
    pub site: String,
    pub disk_bytes: u64,
    pub file_count: u64,
    pub walk_ms: u64,
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct SiteProcessRow {
    pub node: String,
    pub ts: u64,
    pub site: String,
    pub user: String,
    pub processes: u32,
    pub cpu_pct: f64,
    pub rss_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ServiceRow {
    pub node: String,
    pub ts: u64,
    pub unit: String,
    pub site: String,
    pub active_state: String,
    pub sub_state: String,
    pub main_pid: u32,
    pub memory_bytes: u64,
    pub cpu_time_us: u64,
    pub restarts: u32,
}

/// A state change of an alert, as the alerter sent it (`AlertEvent` of
/// `livehead/v1/alerts.proto`). `agent` is the sender's identity (the
/// alerter's certificate name); `node` is the node the alert is about. Enums
/// are stored as their lowercase names (`critical`, `firing`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct AlertEventRow {
    pub agent: String,
    pub ts: u64,
    pub alert_id: String,
    pub rule: String,
    pub severity: String,
    pub node: String,
    pub site: String,
    pub service: String,
    pub state: String,
    pub summary: String,
    pub since_ms: u64,
    pub actor: String,
}

/// One delivery attempt of a notification (`AlertDelivery`); `agent` is the
/// sender's identity, enums are their lowercase names (`resolved`, `sent`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct AlertDeliveryRow {
    pub agent: String,
    pub ts: u64,
    pub notification_id: String,
    pub receiver: String,
    pub state: String,
    pub attempt: u32,
    pub outcome: String,
    pub http_status: u32,
    pub error: String,
}

/// One thing an agent's watchdog saw or did (`WatchdogEvent` of
/// `livehead/v1/watchdog.proto`). Enums are stored as their lowercase names
/// (`recovery_step`, `timed_out`); `step_end` is empty except for steps.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct WatchdogEventRow {
    pub node: String,
    pub ts: u64,
    pub app: String,
    pub kind: String,
    pub attempt: u32,
    pub reason: String,
    pub command: String,
    pub step_end: String,
    pub exit_status: u32,
    pub duration_ms: u64,
    pub output: String,
}

/// One version of a heartbeat check's definition (`HeartbeatCheck` of
/// `livehead/v1/heartbeats.proto`); the newest per `check_id` is the check.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct HeartbeatCheckRow {
    pub agent: String,
    pub ts: u64,
    pub check_id: String,
    pub project: String,
    pub slug: String,
    pub name: String,
    pub tags: String,
    pub period_s: u64,
    pub cron: String,
    pub tz: String,
    pub grace_s: u64,
    pub paused: bool,
    pub deleted: bool,
    pub source: String,
    pub actor: String,
}

/// One ping of a check (`HeartbeatPing`); `kind` is the lowercase name
/// (`success`, `start`, `fail`, `log`, `exit`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct HeartbeatPingRow {
    pub agent: String,
    pub ts: u64,
    pub check_id: String,
    pub kind: String,
    pub exit_status: u32,
    pub rid: String,
    pub method: String,
    pub remote: String,
    pub user_agent: String,
    pub body: String,
    pub body_bytes: u64,
    pub duration_ms: u64,
}

/// A check's change of status (`HeartbeatState`), written by the alerter;
/// statuses are lowercase names (`up`, `down`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct HeartbeatStateRow {
    pub agent: String,
    pub ts: u64,
    pub check_id: String,
    pub name: String,
    pub status: String,
    pub previous: String,
    pub reason: String,
}

/// The digest key of each kind: the `UInt64` column hashed with `ts`.
/// Strings count by their length in bytes (ClickHouse's `length`).
macro_rules! kind_row {
    ($row:ty, |$r:ident| $key:expr, [$($text:ident),*]) => {
        impl KindRow for $row {
            fn digest(&self) -> u64 {
                let $r = self;
                row_digest(self.ts, $key)
            }
            fn heap_bytes(&self) -> usize {
                std::mem::size_of::<Self>() $(+ self.$text.len())*
            }
        }
    };
}

kind_row!(NodeRow, |r| r.mem_available_bytes, [node]);
kind_row!(
    FilesystemRow,
    |r| r.used_bytes,
    [node, mountpoint, device, fstype]
);
kind_row!(DiskRow, |r| r.device.len() as u64, [node, device]);
kind_row!(
    InterfaceRow,
    |r| r.interface.len() as u64,
    [node, interface]
);
kind_row!(PodRow, |r| r.memory_current_bytes, [node, pod, cgroup]);
kind_row!(SiteDiskRow, |r| r.disk_bytes, [node, site]);
kind_row!(SiteProcessRow, |r| r.rss_bytes, [node, site, user]);
kind_row!(
    ServiceRow,
    |r| r.memory_bytes,
    [node, unit, site, active_state, sub_state]
);

kind_row!(
    AlertEventRow,
    |r| r.since_ms,
    [
        agent, alert_id, rule, severity, node, site, service, state, summary, actor
    ]
);
kind_row!(
    AlertDeliveryRow,
    |r| u64::from(r.attempt),
    [agent, notification_id, receiver, state, outcome, error]
);

kind_row!(
    WatchdogEventRow,
    |r| r.duration_ms,
    [node, app, kind, reason, command, step_end, output]
);
kind_row!(
    HeartbeatCheckRow,
    |r| r.grace_s,
    [
        agent, check_id, project, slug, name, tags, cron, tz, source, actor
    ]
);
kind_row!(
    HeartbeatPingRow,
    |r| r.body_bytes,
    [agent, check_id, kind, rid, method, remote, user_agent, body]
);
kind_row!(
    HeartbeatStateRow,
    |r| r.reason.len() as u64,
    [agent, check_id, name, status, previous, reason]
);

/// The scope of a "latest" read: rows newer than `since_ms` (older ones are
/// things that went away: an unmounted filesystem, a deleted pod), of one
/// node or site when set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Latest<'a> {
    pub since_ms: u64,
    /// `node` for node-level reads, `site` for site-level reads.
    pub only: Option<&'a str>,
}

/// The scope of a history read: rows since `since_ms`, averaged into at most
/// `points` equal time buckets (each row answered carries its bucket's start
/// as `ts`), oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History<'a> {
    /// The node or site.
    pub of: &'a str,
    pub since_ms: u64,
    pub until_ms: u64,
    pub points: u32,
}

/// A read of sample rows for `/stats`: which kind, and which rows of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsQuery<'a> {
    pub kind: SampleKind,
    pub scope: Scope<'a>,
}

/// The sample tables (and the alert tables, written and read the same way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleKind {
    Node,
    Filesystem,
    Disk,
    Interface,
    Pod,
    SiteDisk,
    SiteProcess,
    Service,
    /// `alert_events` (not served by `/stats`).
    AlertEvent,
    /// `alert_deliveries` (not served by `/stats`).
    AlertDelivery,
    /// `watchdog_events`.
    Watchdog,
    /// `heartbeat_checks` (not served by `/stats`; see `heartbeats`).
    HeartbeatCheck,
    /// `heartbeat_pings` (not served by `/stats`).
    HeartbeatPing,
    /// `heartbeat_states` (not served by `/stats`).
    HeartbeatState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope<'a> {
    /// The newest row of each thing (node; node and mountpoint; node and
    /// site; node and unit...).
    Latest(Latest<'a>),
    /// Bucketed averages over time.
    History(History<'a>),
    /// The newest rows of one thing, newest first.
    Newest(Newest<'a>),
}

/// The scope of a "newest rows" read: rows whose first thing columns equal
/// `of` (a check's pings: `[check_id]`; its starts: `[check_id, "start"]`),
/// newest first, at most `limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Newest<'a> {
    pub of: &'a [&'a str],
    pub limit: u32,
}
