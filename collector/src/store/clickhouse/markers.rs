//! The tables whose materialized views write batch markers, one per record
//! kind, and the SQL that finds rows a server stopped mid-insert left
//! without their marker (see `ClickHouseStore::count_unmarked_rows`).

use crate::store::rows::RowKind;
use crate::store::sample_tables;
use crate::store::samples::SampleKind;

/// A table written with its batch's `seq`, whose view into `ingest_batches`
/// counts its rows per (agent, seq) with digest
/// `sum(intHash64(bitXor(intHash64(ts), <digest_key>)))` (`KindRow::digest`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkedTable {
    pub table: &'static str,
    /// The column holding the sending agent.
    pub agent: &'static str,
    /// The column that, with `ts`, starts the sort key: how one row is found.
    pub located_by: &'static str,
    pub digest_key: &'static str,
}

impl MarkedTable {
    pub fn of(kind: RowKind) -> Self {
        let sample = |kind: SampleKind| {
            let spec = sample_tables::spec(kind);
            MarkedTable {
                table: spec.table,
                agent: spec.by,
                located_by: spec.only,
                digest_key: spec.digest_key,
            }
        };
        match kind {
            RowKind::Node => sample(SampleKind::Node),
            RowKind::Filesystem => sample(SampleKind::Filesystem),
            RowKind::Disk => sample(SampleKind::Disk),
            RowKind::Interface => sample(SampleKind::Interface),
            RowKind::Pod => sample(SampleKind::Pod),
            RowKind::SiteDisk => sample(SampleKind::SiteDisk),
            RowKind::SiteProcess => sample(SampleKind::SiteProcess),
            RowKind::Service => sample(SampleKind::Service),
            RowKind::AlertEvent => sample(SampleKind::AlertEvent),
            RowKind::AlertDelivery => sample(SampleKind::AlertDelivery),
            RowKind::Watchdog => sample(SampleKind::Watchdog),
            RowKind::HeartbeatCheck => sample(SampleKind::HeartbeatCheck),
            RowKind::HeartbeatPing => sample(SampleKind::HeartbeatPing),
            RowKind::HeartbeatState => sample(SampleKind::HeartbeatState),
            RowKind::Probe => MarkedTable {
                table: "health_history",
                agent: "agent",
                located_by: "site",
                digest_key: "latency_us",
            },
        }
    }

    /// The view writing this table's markers.
    pub fn view_sql(&self, view: &str, batches_table: &str) -> String {
        format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {view} TO {batches_table} AS \
             SELECT {agent} AS agent, seq, count() AS records, now() AS written_at, \
             sum(intHash64(bitXor(intHash64(ts), {key}))) AS digest \
             FROM {table} GROUP BY agent, seq",
            agent = self.agent,
            key = self.digest_key,
            table = self.table,
        )
    }

    /// Binds a tuple of (`located_by`, ts) pairs, an array of agents and an
    /// array of seqs; answers the (agent, seq) of the rows found.
    pub fn rows_at_sql(&self) -> String {
        format!(
            "SELECT DISTINCT {agent} AS agent, seq FROM {table} \
             WHERE ({by}, ts) IN ? AND has(?, {agent}) AND has(?, seq)",
            agent = self.agent,
            table = self.table,
            by = self.located_by,
        )
    }

    /// Binds a tuple of `located_by` values, an array of agents and an array
    /// of seqs; answers the rows of each (agent, seq) among them, counted and
    /// digested as the view does.
    pub fn count_sql(&self) -> String {
        format!(
            "SELECT {agent} AS agent, seq, count() AS records, \
             sum(intHash64(bitXor(intHash64(ts), {key}))) AS digest FROM {table} \
             WHERE {by} IN ? AND has(?, {agent}) AND has(?, seq) GROUP BY agent, seq",
            agent = self.agent,
            key = self.digest_key,
            table = self.table,
            by = self.located_by,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_marked_table_its_rows_are_found_in() {
        // `ClickHouseStore`'s `located_by` gives the site of these kinds'
        // rows and the agent for the others.
        let by_site = [
            RowKind::Probe,
            RowKind::SiteDisk,
            RowKind::SiteProcess,
            RowKind::Service,
        ];
        let by_agent = [
            RowKind::AlertEvent,
            RowKind::AlertDelivery,
            RowKind::HeartbeatCheck,
            RowKind::HeartbeatPing,
            RowKind::HeartbeatState,
        ];
        for &kind in RowKind::ALL {
            let expected = if by_site.contains(&kind) {
                "site"
            } else if by_agent.contains(&kind) {
                "agent"
            } else {
                "node"
            };
            assert_eq!(MarkedTable::of(kind).located_by, expected, "{kind:?}");
        }
        let tables: std::collections::HashSet<&str> = RowKind::ALL
            .iter()
            .map(|k| MarkedTable::of(*k).table)
            .collect();
        assert_eq!(tables.len(), RowKind::ALL.len());
    }
}
