//! [`Rows`]: a batch's rows, one set per record kind. The ingest path, the
//! group commit and the stores carry this one type, so adding a kind adds a
//! line to [`row_sets!`] rather than a field to every stage.
//!
//! A batch's rows have one order: kind after kind, in the order listed below,
//! each kind's rows in the order the agent sent them. Stores write tables in
//! that order, so what an interrupted ClickHouse INSERT leaves of a batch is
//! always a prefix of it (see [`super::Replay`]).

use super::ProbeRow;
use super::samples::{
    AlertDeliveryRow, AlertEventRow, DiskRow, FilesystemRow, HeartbeatCheckRow, HeartbeatPingRow,
    HeartbeatStateRow, InterfaceRow, KindRow, NodeRow, PodRow, ServiceRow, SiteDiskRow,
    SiteProcessRow, WatchdogEventRow,
};

macro_rules! row_sets {
    ($($kind:ident => $field:ident: $row:ty),* $(,)?) => {
        /// The record kinds, in the batch order.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum RowKind {
            $($kind,)*
        }

        impl RowKind {
            pub const ALL: &[RowKind] = &[$(RowKind::$kind,)*];
        }

        /// A batch's rows, one set per kind.
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct Rows {
            $(pub $field: Vec<$row>,)*
        }

        /// A view of [`Rows`], possibly without a prefix of them ([`RowsRef::skip`]).
        #[derive(Debug, Clone, Copy, Default, PartialEq)]
        pub struct RowsRef<'a> {
            $(pub $field: &'a [$row],)*
        }

        impl Rows {
            pub fn as_ref(&self) -> RowsRef<'_> {
                RowsRef { $($field: &self.$field,)* }
            }

            pub fn len(&self) -> usize {
                self.as_ref().len()
            }

            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }

            /// Moves every row of `other` to the end of its kind's rows.
            pub fn append(&mut self, other: Rows) {
                $(self.$field.extend(other.$field);)*
            }

            /// Appends copies of `rows`.
            pub fn extend(&mut self, rows: RowsRef<'_>) {
                $(self.$field.extend_from_slice(rows.$field);)*
            }

            /// What the rows hold in memory, strings included.
            pub fn heap_bytes(&self) -> usize {
                0 $(+ self.$field.iter().map(KindRow::heap_bytes).sum::<usize>())*
            }
        }

        impl<'a> RowsRef<'a> {
            pub fn len(&self) -> usize {
                0 $(+ self.$field.len())*
            }

            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }

            /// The rows after the first `n` (in the batch's order).
            pub fn skip(self, mut n: usize) -> Self {
                $(
                    let take = n.min(self.$field.len());
                    let $field = &self.$field[take..];
                    n -= take;
                )*
                let _ = n;
                Self { $($field,)* }
            }

            /// The first `n` rows (in the batch's order).
            pub fn take(self, mut n: usize) -> Self {
                $(
                    let take = n.min(self.$field.len());
                    let $field = &self.$field[..take];
                    n -= take;
                )*
                let _ = n;
                Self { $($field,)* }
            }

            /// Copies the rows.
            pub fn to_rows(&self) -> Rows {
                Rows { $($field: self.$field.to_vec(),)* }
            }

            /// The kind and `ts` of the first row, if any.
            pub fn first(&self) -> Option<(RowKind, u64)> {
                $(
                    if let Some(row) = self.$field.first() {
                        return Some((RowKind::$kind, row.ts));
                    }
                )*
                None
            }

            /// How many rows of `kind` there are.
            pub fn count(&self, kind: RowKind) -> usize {
                match kind {
                    $(RowKind::$kind => self.$field.len(),)*
                }
            }

            /// The rows' fingerprint: see [`super::digest`].
            pub fn digest(&self) -> u64 {
                0u64 $(.wrapping_add(
                    self.$field.iter().fold(0u64, |sum, r| sum.wrapping_add(r.digest()))
                ))*
            }
        }
    };
}

row_sets! {
    Node => nodes: NodeRow,
    Filesystem => filesystems: FilesystemRow,
    Disk => disks: DiskRow,
    Interface => interfaces: InterfaceRow,
    Pod => pods: PodRow,
    SiteDisk => site_disks: SiteDiskRow,
    SiteProcess => site_processes: SiteProcessRow,
    Service => services: ServiceRow,
    // Before the probes, not after: ClickHouse writes the tables of this
    // list's kinds in one pass and `health_history` after it, and a batch's
    // kinds must be written in this order (see the module's doc).
    AlertEvent => alerts: AlertEventRow,
    AlertDelivery => deliveries: AlertDeliveryRow,
    Watchdog => watchdog: WatchdogEventRow,
    HeartbeatCheck => heartbeat_checks: HeartbeatCheckRow,
    HeartbeatPing => heartbeat_pings: HeartbeatPingRow,
    HeartbeatState => heartbeat_states: HeartbeatStateRow,
    Probe => probes: ProbeRow,
}

impl KindRow for ProbeRow {
    fn digest(&self) -> u64 {
        super::row_digest(self.ts, self.latency_us)
    }

    fn heap_bytes(&self) -> usize {
        ProbeRow::heap_bytes(self)
    }
}

impl<'a> RowsRef<'a> {
    /// Probe rows alone (the old worker's `/push` carries nothing else).
    pub fn of_probes(probes: &'a [ProbeRow]) -> Self {
        Self {
            probes,
            ..Self::default()
        }
    }
}

impl From<Vec<ProbeRow>> for Rows {
    fn from(probes: Vec<ProbeRow>) -> Self {
        Self {
            probes,
            ..Self::default()
        }
    }
}

impl From<super::samples::SampleKind> for RowKind {
    fn from(kind: super::samples::SampleKind) -> Self {
        use super::samples::SampleKind as S;
        match kind {
            S::Node => Self::Node,
            S::Filesystem => Self::Filesystem,
            S::Disk => Self::Disk,
            S::Interface => Self::Interface,
            S::Pod => Self::Pod,
            S::SiteDisk => Self::SiteDisk,
            S::SiteProcess => Self::SiteProcess,
            S::Service => Self::Service,
            S::AlertEvent => Self::AlertEvent,
            S::AlertDelivery => Self::AlertDelivery,
            S::Watchdog => Self::Watchdog,
            S::HeartbeatCheck => Self::HeartbeatCheck,
            S::HeartbeatPing => Self::HeartbeatPing,
            S::HeartbeatState => Self::HeartbeatState,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mixed() -> Rows {
        Rows {
            nodes: vec![NodeRow {
                ts: 1,
                mem_available_bytes: 7,
                ..NodeRow::default()
            }],
            filesystems: vec![FilesystemRow::default(), FilesystemRow::default()],
            probes: vec![
                ProbeRow {
                    ts: 4,
                    ..ProbeRow::default()
                },
                ProbeRow {
                    ts: 5,
                    ..ProbeRow::default()
                },
            ],
            ..Rows::default()
        }
    }

    #[test]
    fn a_batch_is_ordered_kind_after_kind() {
        let rows = mixed();
        let all = rows.as_ref();
        assert_eq!(all.len(), 5);
        assert_eq!(all.first(), Some((RowKind::Node, 1)));
        let rest = all.skip(3);
        assert_eq!(rest.len(), 2);
        assert_eq!(rest.first(), Some((RowKind::Probe, 4)));
        assert_eq!(all.skip(4).probes, &rows.probes[1..]);
        assert!(all.skip(9).is_empty());
        let head = all.take(2);
        assert_eq!((head.nodes.len(), head.filesystems.len()), (1, 1));
        assert!(head.probes.is_empty());
        assert_eq!(all.take(5), all);
        assert_eq!(all.to_rows(), rows);
    }

    #[test]
    fn digests_of_a_prefix_and_the_rest_add_up() {
        let rows = mixed();
        let all = rows.as_ref();
        for n in 0..=all.len() {
            assert_eq!(
                all.take(n).digest().wrapping_add(all.skip(n).digest()),
                all.digest(),
                "split at {n}"
            );
        }
        let mut other = mixed();
        other.nodes[0].mem_available_bytes = 8;
        assert_ne!(other.as_ref().digest(), all.digest());
    }

    #[test]
    fn every_kind_is_counted_and_sized() {
        let rows = mixed();
        let counts: Vec<usize> = RowKind::ALL
            .iter()
            .map(|k| rows.as_ref().count(*k))
            .collect();
        assert_eq!(counts.iter().sum::<usize>(), rows.len());
        assert!(rows.heap_bytes() >= 5 * std::mem::size_of::<FilesystemRow>().min(64));
    }
}
