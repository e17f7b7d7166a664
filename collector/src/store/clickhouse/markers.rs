//! The tables whose materialized views write batch markers, one per record
//! kind, and the SQL that finds rows a server stopped mid-insert left
//! without their marker (see `ClickHouseStore::count_unmarked_rows`).

use crate::store::rows::RowKind;

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

const fn sample(table: &'static str, digest_key: &'static str) -> MarkedTable {
    MarkedTable {
        table,
        agent: "node",
        located_by: "node",
        digest_key,
    }
}

impl MarkedTable {
    pub const fn of(kind: RowKind) -> Self {
        match kind {
            RowKind::Node => sample("node_samples", "mem_available_bytes"),
            RowKind::Filesystem => sample("filesystem_samples", "used_bytes"),
            RowKind::Disk => sample("disk_samples", "length(device)"),
            RowKind::Interface => sample("interface_samples", "length(interface)"),
            RowKind::Pod => sample("pod_samples", "memory_current_bytes"),
            RowKind::SiteDisk => sample("site_disk_samples", "disk_bytes"),
            RowKind::SiteProcess => sample("site_process_samples", "rss_bytes"),
            RowKind::Service => sample("service_states", "memory_bytes"),
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
