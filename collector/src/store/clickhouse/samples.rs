//! The sample tables on ClickHouse: their writer (one INSERT per kind for a
//! group of batches, whose materialized views write the batches' markers) and
//! the `/stats` reads. Tables and views are created by migration 4 of
//! [`super::schema`].
//!
//! Reads work on 18.16 (no window functions, no `LIMIT BY` needed): the
//! newest row of each thing is `argMax(tuple(...), ts)` grouped by the
//! thing's key, which keeps the newest row's `NULL`s (an `argMax` of a
//! `Nullable` column alone would skip them); history is averaged per bucket
//! in a subquery, so that its bucket alias cannot shadow `ts` in the
//! aggregates (ClickHouse substitutes aliases everywhere in a query).

use ::clickhouse::{Client, Row, RowWrite};
use serde::{Deserialize, Serialize};

use super::INSERT_TIMEOUT;
use crate::store::Rows;
use crate::store::RowsRef;
use crate::store::StoreError;
use crate::store::sample_tables::{ColType, TableSpec, bucket_width, sample_tables, spec};
use crate::store::samples::{
    AlertDeliveryRow, AlertEventRow, DiskRow, FilesystemRow, HeartbeatCheckRow, HeartbeatPingRow,
    HeartbeatStateRow, InterfaceRow, NodeRow, PodRow, SampleKind, Scope, ServiceRow, SiteDiskRow,
    SiteProcessRow, StatsQuery, WatchdogEventRow,
};

macro_rules! clickhouse_rows {
    ($($field:ident: $row:ident = $kind:ident, $table:literal, by $by:ident,
       since $since:literal, only $only:ident,
       things [$($thing:ident),*], digest $digest:literal,
       { $($col:ident: $ty:ty),* $(,)? });* $(;)?) => {
        $(
            /// The insert and read structs of one table.
            pub(super) mod $field {
                use super::*;

                /// A row as inserted: field order is the table's column order.
                #[derive(Row, Serialize)]
                pub(crate) struct Insert<'a> {
                    pub $by: &'a str,
                    $(pub $col: &'a $ty,)*
                    pub seq: u64,
                }

                impl<'a> Insert<'a> {
                    /// The identity column is the batch's agent, which the
                    /// marker view keys the batch on.
                    pub fn new(row: &'a $row, agent: &'a str, seq: u64) -> Self {
                        Self { $by: agent, $($col: &row.$col,)* seq }
                    }
                }

                /// A row as the reads answer it.
                #[derive(Row, Deserialize)]
                pub(crate) struct Read {
                    $by: String,
                    $($col: $ty,)*
                }

                impl From<Read> for $row {
                    fn from(r: Read) -> Self {
                        Self { $by: r.$by, $($col: r.$col,)* }
                    }
                }
            }
        )*

        /// Writes the sample rows of `batches` (agent, seq, rows): for each
        /// kind in [`Rows`]' order, one INSERT of every batch's rows of that
        /// kind, batch after batch, each in its order; empty kinds are
        /// skipped. Each INSERT's views write the markers of the rows it
        /// holds, so an INSERT cut short leaves markers counting the rows
        /// kept (a prefix, in the batch order of [`Rows`]).
        pub(crate) async fn write_sample_rows(
            client: &Client,
            batches: &[(&str, u64, RowsRef<'_>)],
        ) -> Result<(), StoreError> {
            $(
                let rows: Vec<$field::Insert<'_>> = batches
                    .iter()
                    .flat_map(|(agent, seq, rows)| {
                        rows.$field.iter().map(move |r| $field::Insert::new(r, agent, *seq))
                    })
                    .collect();
                if !rows.is_empty() {
                    insert::<$field::Insert<'_>>(client, $table, rows).await?;
                }
            )*
            Ok(())
        }

        /// Fetches `query`'s rows into their set of [`Rows`].
        async fn fetch(client: &Client, query: &StatsQuery<'_>) -> Result<Rows, StoreError> {
            let mut out = Rows::default();
            match query.kind {
                $(SampleKind::$kind => {
                    out.$field = bound(client, query)?
                        .fetch_all::<$field::Read>()
                        .await?
                        .into_iter()
                        .map($row::from)
                        .collect();
                })*
            }
            Ok(out)
        }

        #[cfg(test)]
        mod columns {
            use super::*;

            #[test]
            fn row_structs_match_the_schema() {
                $(
                    assert_eq!(
                        $field::Insert::COLUMN_NAMES,
                        spec(SampleKind::$kind).column_names().as_slice()
                    );
                    assert_eq!(
                        $field::Read::COLUMN_NAMES,
                        &spec(SampleKind::$kind).column_names()[..spec(SampleKind::$kind).columns.len()]
                    );
                )*
            }
        }
    };
}
sample_tables!(clickhouse_rows);

/// `Store::stats` on ClickHouse.
pub(crate) async fn stats(client: &Client, query: &StatsQuery<'_>) -> Result<Rows, StoreError> {
    if let Scope::History(history) = &query.scope
        && bucket_width(history).is_none()
    {
        return Ok(Rows::default());
    }
    fetch(client, query).await
}

/// The query of `stats` with its values bound, in the order of their `?`.
fn bound(
    client: &Client,
    query: &StatsQuery<'_>,
) -> Result<::clickhouse::query::Query, StoreError> {
    let table = spec(query.kind);
    Ok(match &query.scope {
        Scope::Latest(latest) => {
            let q = client
                .query(&latest_sql(table, latest.only.is_some()))
                .bind(latest.since_ms);
            match latest.only {
                Some(only) => q.bind(only),
                None => q,
            }
        }
        Scope::History(history) => {
            let width = bucket_width(history).unwrap_or(1);
            client
                .query(&history_sql(table))
                .bind(history.since_ms)
                .bind(width)
                .bind(history.since_ms)
                .bind(width)
                .bind(history.of)
                .bind(history.since_ms)
                .bind(history.until_ms)
        }
        Scope::Newest(newest) => {
            let of = &newest.of[..newest.of.len().min(table.things.len())];
            let q = client.query(&newest_sql(table, of.len()));
            of.iter()
                .fold(q, |q, value| q.bind(*value))
                .bind(newest.limit)
        }
    })
}

/// The newest rows whose first `of` thing columns equal the bound values,
/// newest first; binds those values, then the limit.
pub fn newest_sql(table: &TableSpec, of: usize) -> String {
    let columns: Vec<&str> = table.columns.iter().map(|(name, _)| *name).collect();
    let filter: Vec<String> = table.things[..of]
        .iter()
        .map(|name| format!("{name} = ?"))
        .collect();
    let filter = if filter.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", filter.join(" AND "))
    };
    format!(
        "SELECT {} FROM {}{filter} ORDER BY ts DESC LIMIT ?",
        columns.join(", "),
        table.table,
    )
}

/// The newest row of each thing with `ts >= ?` (and `only = ?` when
/// `only`), ordered by the thing's key.
pub fn latest_sql(table: &TableSpec, only: bool) -> String {
    let key = table.key();
    let others: Vec<&str> = table
        .columns
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| *name != "ts" && !key.contains(name))
        .collect();
    let mut element = 0;
    let outer: Vec<String> = table
        .columns
        .iter()
        .map(|(name, _)| {
            if *name == "ts" {
                "last_ts AS ts".to_owned()
            } else if key.contains(name) {
                (*name).to_owned()
            } else {
                element += 1;
                format!("tupleElement(v, {element}) AS {name}")
            }
        })
        .collect();
    let filter = if only {
        format!(" AND {} = ?", table.only)
    } else {
        String::new()
    };
    format!(
        "SELECT {} FROM (SELECT {keys}, max(ts) AS last_ts, argMax(tuple({}), ts) AS v \
         FROM {} WHERE ts >= ?{filter} GROUP BY {keys}) ORDER BY {keys}",
        outer.join(", "),
        others.join(", "),
        table.table,
        keys = key.join(", "),
    )
}

/// Rows of one node or site (`only = ?`) with `? <= ts <= ?`, averaged per
/// thing into buckets of `?` ms (`ts` = the bucket's start), oldest first.
/// Binds: since, width (the bucket's start), since, width (the bucket), the
/// node or site, since, until.
pub fn history_sql(table: &TableSpec) -> String {
    let key = table.key();
    let mut inner = Vec::new();
    let outer: Vec<String> = table
        .columns
        .iter()
        .map(|(name, ty)| {
            if *name == "ts" {
                return "toUInt64(? + bucket * ?) AS ts".to_owned();
            }
            if key.contains(name) {
                return (*name).to_owned();
            }
            let aggregate = match ty {
                ColType::Text => format!("argMax({name}, ts)"),
                ColType::Bool => format!("max({name})"),
                ColType::U32 => format!("toUInt32(avg({name}))"),
                ColType::U64 => format!("toUInt64(avg({name}))"),
                ColType::F64 | ColType::OptF64 => format!("avg({name})"),
            };
            inner.push(format!("{aggregate} AS a_{name}"));
            format!("a_{name} AS {name}")
        })
        .collect();
    format!(
        "SELECT {} FROM (SELECT {keys}, intDiv(ts - ?, ?) AS bucket, {} FROM {} \
         WHERE {} = ? AND ts >= ? AND ts <= ? GROUP BY {keys}, bucket) ORDER BY {keys}, ts",
        outer.join(", "),
        inner.join(", "),
        table.table,
        table.only,
        keys = key.join(", "),
    )
}

/// Writes `rows` to `table` in one INSERT and waits until the server has them.
async fn insert<'r, T: RowWrite>(
    client: &Client,
    table: &str,
    rows: Vec<T::Value<'r>>,
) -> Result<(), StoreError> {
    let mut insert = client
        .insert::<T>(table)
        .await?
        .with_timeouts(Some(INSERT_TIMEOUT), Some(INSERT_TIMEOUT));
    for row in &rows {
        insert.write(row).await?;
    }
    insert.end().await?;
    Ok(())
}
