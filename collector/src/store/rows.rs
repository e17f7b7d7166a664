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
    DiskRow, FilesystemRow, InterfaceRow, KindRow, NodeRow, PodRow, ServiceRow, SiteDiskRow,
    SiteProcessRow,
};

macro_rules! row_sets {
    ($($field:ident: $row:ty),* $(,)?) => {
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
    nodes: NodeRow,
    filesystems: FilesystemRow,
    disks: DiskRow,
    interfaces: InterfaceRow,
    pods: PodRow,
    site_disks: SiteDiskRow,
    site_processes: SiteProcessRow,
    services: ServiceRow,
    probes: ProbeRow,
}

impl KindRow for ProbeRow {
    fn digest(&self) -> u64 {
        super::row_digest(self.ts, self.latency_us)
    }

    fn heap_bytes(&self) -> usize {
        ProbeRow::heap_bytes(self)
    }
}
