//! The sample tables as data, shared by both stores: one [`TableSpec`] per
//! kind (name, columns and their types, what identifies a "thing", which
//! column `only`/`of` filter on), from which each store renders its DDL and
//! its `/stats` reads, and [`sample_tables!`], the same list for code that
//! needs the row types (insert and read structs).
//!
//! Every table holds the row's columns (the sending agent's identity, `ts` in
//! unix ms, then the record's fields) followed by `seq`, the batch the row
//! came in, which the ClickHouse marker views key on. The identity column is
//! `node` in the sample tables and `agent` in the alert tables, whose
//! records have a `node` of their own (the node an alert is about).
//!
//! The alert tables (`alert_events`, `alert_deliveries`, written by the
//! alerter through the ingest path like any agent's records) are listed here
//! too: they are appended and marked exactly as samples are. They are sorted
//! by sender and time only (no "thing"), and `/stats` does not serve them.
//!
//! So are the watchdog's events (`watchdog_events`, sent by agents) and the
//! heartbeat tables: `heartbeat_checks` (one row per version of a check's
//! definition; the newest per `check_id` is the check, and it never expires),
//! `heartbeat_pings` (written by the collector's ping endpoints) and
//! `heartbeat_states` (status changes, written by the alerter). The
//! collector writes its heartbeat rows under the identity
//! [`HEARTBEAT_WRITER`], the same on every replica, so "the newest row per
//! thing" means the same thing whichever replica wrote it.

use super::samples::{History, SampleKind};

/// Calls `$callback!` with every sample kind, in the order of
/// [`Rows`](super::Rows): its field in `Rows`, row type, [`SampleKind`],
/// table, the identity column (the sending agent), the schema version that
/// creates the table, the column `only`/`of` filter on, the columns after the
/// identity that identify one thing (a filesystem is a node and a
/// mountpoint), the column hashed into batch digests (`KindRow::digest`), and
/// the row's columns after the identity, in order.
macro_rules! sample_tables {
    ($callback:ident) => {
        $callback! {
            nodes: NodeRow = Node, "node_samples", by node, since 4, only node, things [],
            digest "mem_available_bytes", {
                ts: u64, cpu_cores: u32, cpu_busy_pct: f64, cpu_user_pct: f64,
                cpu_system_pct: f64, cpu_iowait_pct: f64, cpu_steal_pct: f64,
                load1: f64, load5: f64, load15: f64, tasks_running: u32, tasks_total: u32,
                mem_total_bytes: u64, mem_available_bytes: u64, mem_used_pct: f64,
                swap_total_bytes: u64, swap_free_bytes: u64,
                psi_cpu_some: Option<f64>, psi_cpu_full: Option<f64>,
                psi_io_some: Option<f64>, psi_io_full: Option<f64>,
                psi_memory_some: Option<f64>, psi_memory_full: Option<f64>,
                open_fds: u64, uptime_s: u64
            };
            filesystems: FilesystemRow = Filesystem, "filesystem_samples", by node, since 4, only node,
            things [mountpoint], digest "used_bytes", {
                ts: u64, mountpoint: String, device: String, fstype: String,
                size_bytes: u64, used_bytes: u64, free_bytes: u64, used_pct: f64,
                inodes_total: u64, inodes_used: u64, inodes_free: u64, inodes_used_pct: f64
            };
            disks: DiskRow = Disk, "disk_samples", by node, since 4, only node, things [device],
            digest "length(device)", {
                ts: u64, device: String, read_bytes_per_s: f64, write_bytes_per_s: f64,
                reads_per_s: f64, writes_per_s: f64
            };
            interfaces: InterfaceRow = Interface, "interface_samples", by node, since 4, only node,
            things [interface], digest "length(interface)", {
                ts: u64, interface: String, rx_bytes_per_s: f64, tx_bytes_per_s: f64,
                rx_packets_per_s: f64, tx_packets_per_s: f64, rx_errors_per_s: f64,
                tx_errors_per_s: f64, rx_drops_per_s: f64, tx_drops_per_s: f64
            };
            pods: PodRow = Pod, "pod_samples", by node, since 4, only node, things [pod],
            digest "memory_current_bytes", {
                ts: u64, pod: String, cgroup: String, cpu_pct: f64, cpu_throttled_us: u64,
                memory_current_bytes: u64, memory_max_bytes: u64,
                memory_working_set_bytes: u64, oom_kills: u64,
                io_read_bytes_per_s: f64, io_write_bytes_per_s: f64,
                io_reads_per_s: f64, io_writes_per_s: f64, pids_current: u64, pids_max: u64
            };
            site_disks: SiteDiskRow = SiteDisk, "site_disk_samples", by node, since 4, only site,
            things [site], digest "disk_bytes", {
                ts: u64, site: String, disk_bytes: u64, file_count: u64, walk_ms: u64,
                truncated: bool
            };
            site_processes: SiteProcessRow = SiteProcess, "site_process_samples", by node, since 4, only site,
            things [site], digest "rss_bytes", {
                ts: u64, site: String, user: String, processes: u32, cpu_pct: f64,
                rss_bytes: u64
            };
            services: ServiceRow = Service, "service_states", by node, since 4, only site, things [unit],
            digest "memory_bytes", {
                ts: u64, unit: String, site: String, active_state: String,
                sub_state: String, main_pid: u32, memory_bytes: u64, cpu_time_us: u64,
                restarts: u32
            };
            alerts: AlertEventRow = AlertEvent, "alert_events", by agent, since 5, only agent,
            things [], digest "since_ms", {
                ts: u64, alert_id: String, rule: String, severity: String, node: String,
                site: String, service: String, state: String, summary: String,
                since_ms: u64, actor: String
            };
            deliveries: AlertDeliveryRow = AlertDelivery, "alert_deliveries", by agent, since 5,
            only agent, things [], digest "toUInt64(attempt)", {
                ts: u64, notification_id: String, receiver: String, state: String,
                attempt: u32, outcome: String, http_status: u32, error: String
            };
            watchdog: WatchdogEventRow = Watchdog, "watchdog_events", by node, since 6, only node,
            things [app], digest "duration_ms", {
                ts: u64, app: String, kind: String, attempt: u32, reason: String,
                command: String, step_end: String, exit_status: u32, duration_ms: u64,
                output: String
            };
            heartbeat_checks: HeartbeatCheckRow = HeartbeatCheck, "heartbeat_checks", by agent,
            since 6, only agent, things [check_id], digest "grace_s", {
                ts: u64, check_id: String, project: String, slug: String, name: String,
                tags: String, period_s: u64, cron: String, tz: String, grace_s: u64,
                paused: bool, deleted: bool, source: String, actor: String
            };
            heartbeat_pings: HeartbeatPingRow = HeartbeatPing, "heartbeat_pings", by agent,
            since 6, only agent, things [check_id, kind], digest "body_bytes", {
                ts: u64, check_id: String, kind: String, exit_status: u32, rid: String,
                method: String, remote: String, user_agent: String, body: String,
                body_bytes: u64, duration_ms: u64
            };
            heartbeat_states: HeartbeatStateRow = HeartbeatState, "heartbeat_states", by agent,
            since 6, only agent, things [check_id], digest "length(reason)", {
                ts: u64, check_id: String, name: String, status: String, previous: String,
                reason: String
            };
        }
    };
}
pub(crate) use sample_tables;

/// The identity (`agent` column) of the heartbeat rows the collector writes
/// itself: checks and pings.
pub const HEARTBEAT_WRITER: &str = "heartbeats";

/// Tables retention never expires: definitions, not observations.
const KEPT: &[&str] = &["heartbeat_checks"];

/// A column's type, which each store maps to its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColType {
    Text,
    U32,
    U64,
    F64,
    /// Absent where the node cannot measure it (PSI without kernel support).
    OptF64,
    Bool,
}

/// The [`ColType`] of a row field's Rust type.
pub trait Column {
    const TYPE: ColType;
}

macro_rules! column_types {
    ($($ty:ty => $col:ident),*) => {
        $(impl Column for $ty { const TYPE: ColType = ColType::$col; })*
    };
}
column_types!(String => Text, u32 => U32, u64 => U64, f64 => F64, Option<f64> => OptF64, bool => Bool);

/// One sample table.
#[derive(Debug)]
pub struct TableSpec {
    pub kind: SampleKind,
    pub table: &'static str,
    /// The column holding the sending agent's identity: `node` (samples) or
    /// `agent` (alert records).
    pub by: &'static str,
    /// The schema version (migration) creating the table.
    pub version: u32,
    /// `node` or `site`: what [`Latest::only`](super::samples::Latest) and
    /// [`History::of`] select.
    pub only: &'static str,
    /// Columns after [`Self::by`] identifying one thing (its newest row is its
    /// latest state; its history is bucketed on its own).
    pub things: &'static [&'static str],
    /// The `UInt64` expression hashed with `ts` into batch digests.
    pub digest_key: &'static str,
    /// The row's columns, [`Self::by`] first, then `ts`; `seq` follows in the table.
    pub columns: &'static [(&'static str, ColType)],
}

impl TableSpec {
    /// [`Self::by`] and [`Self::things`]: one thing's key.
    pub fn key(&self) -> Vec<&'static str> {
        std::iter::once(self.by)
            .chain(self.things.iter().copied())
            .collect()
    }

    /// The sort key: site tables lead with `site` (read per site), the
    /// others with `node`; then the thing and `ts`, so that one thing's rows
    /// over a time range are contiguous.
    pub fn sort_key(&self) -> Vec<&'static str> {
        let mut key = Vec::new();
        if self.only == "site" {
            key.push("site");
        }
        for column in self.key() {
            if !key.contains(&column) {
                key.push(column);
            }
        }
        key.push("ts");
        key
    }

    /// Whether `retention_days` expires its rows (false for definitions:
    /// a check pinged once a year must not vanish).
    pub fn expires(&self) -> bool {
        !KEPT.contains(&self.table)
    }

    /// Column names, in insert order (`seq` last).
    pub fn column_names(&self) -> Vec<&'static str> {
        self.columns
            .iter()
            .map(|(name, _)| *name)
            .chain(["seq"])
            .collect()
    }
}

macro_rules! specs {
    ($($field:ident: $row:ident = $kind:ident, $table:literal, by $by:ident,
       since $since:literal, only $only:ident,
       things [$($thing:ident),*], digest $digest:literal,
       { $($col:ident: $ty:ty),* $(,)? });* $(;)?) => {
        /// Every sample table, in the order of [`Rows`](super::Rows).
        pub const TABLES: &[TableSpec] = &[$(
            TableSpec {
                kind: SampleKind::$kind,
                table: $table,
                by: stringify!($by),
                version: $since,
                only: stringify!($only),
                things: &[$(stringify!($thing)),*],
                digest_key: $digest,
                columns: &[(stringify!($by), ColType::Text), $((stringify!($col), <$ty as Column>::TYPE)),*],
            },
        )*];
    };
}
sample_tables!(specs);

/// The table of `kind`.
pub fn spec(kind: SampleKind) -> &'static TableSpec {
    TABLES
        .iter()
        .find(|t| t.kind == kind)
        .unwrap_or_else(|| unreachable!("every SampleKind has a table"))
}

/// A history read's bucket width in ms: `until - since` (both inclusive)
/// split into at most `points` buckets (0 points counts as 1). `None` when
/// the range is empty.
pub fn bucket_width(history: &History<'_>) -> Option<u64> {
    let span = history
        .until_ms
        .checked_sub(history.since_ms)?
        .saturating_add(1);
    Some(span.div_ceil(u64::from(history.points.max(1))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_one_table_in_rows_order() {
        let kinds: Vec<SampleKind> = TABLES.iter().map(|t| t.kind).collect();
        use SampleKind::*;
        assert_eq!(
            kinds,
            [
                Node,
                Filesystem,
                Disk,
                Interface,
                Pod,
                SiteDisk,
                SiteProcess,
                Service,
                AlertEvent,
                AlertDelivery,
                Watchdog,
                HeartbeatCheck,
                HeartbeatPing,
                HeartbeatState
            ]
        );
        for table in TABLES {
            assert_eq!(&table.columns[0], &(table.by, ColType::Text));
            assert_eq!(&table.columns[1], &("ts", ColType::U64));
            assert!(
                table.columns.iter().any(|(c, _)| *c == table.only),
                "{}",
                table.table
            );
            assert_eq!(spec(table.kind).table, table.table);
        }
        assert_eq!(
            spec(SampleKind::Service).sort_key(),
            ["site", "node", "unit", "ts"]
        );
        assert_eq!(
            spec(SampleKind::Filesystem).sort_key(),
            ["node", "mountpoint", "ts"]
        );
        assert_eq!(
            spec(SampleKind::SiteDisk).sort_key(),
            ["site", "node", "ts"]
        );
        // Alert records: appended, ordered by time (per sender).
        assert_eq!(spec(SampleKind::AlertEvent).sort_key(), ["agent", "ts"]);
        assert_eq!(spec(SampleKind::AlertDelivery).sort_key(), ["agent", "ts"]);
        assert_eq!(
            spec(SampleKind::HeartbeatPing).sort_key(),
            ["agent", "check_id", "kind", "ts"]
        );
        let kept: Vec<&str> = TABLES
            .iter()
            .filter(|t| !t.expires())
            .map(|t| t.table)
            .collect();
        assert_eq!(kept, ["heartbeat_checks"]);
    }

    #[test]
    fn buckets_cover_the_range_in_at_most_points() {
        let h = |since_ms, until_ms, points| History {
            of: "n",
            since_ms,
            until_ms,
            points,
        };
        assert_eq!(bucket_width(&h(0, 99, 10)), Some(10));
        assert_eq!(bucket_width(&h(0, 100, 10)), Some(11));
        assert_eq!(bucket_width(&h(5, 5, 200)), Some(1));
        assert_eq!(bucket_width(&h(0, 99, 0)), Some(100));
        assert_eq!(bucket_width(&h(10, 9, 10)), None);
        for (since, until, points) in [(0, 99, 10), (0, 100, 10), (7, 3_600_006, 200)] {
            let width = bucket_width(&h(since, until, points)).expect("range");
            assert!((until - since) / width < u64::from(points));
        }
    }
}
