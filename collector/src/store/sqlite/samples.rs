//! The sample tables on SQLite: their DDL (migration 4), writer (inside the
//! batch's transaction), `/stats` reads and retention, all rendered from
//! [`crate::store::sample_tables`] like ClickHouse's.
//!
//! The newest row of each thing is SQLite's `max()` with bare columns, which
//! SQLite documents to come from the row holding the maximum; history averages
//! per bucket, text columns taken from the bucket's newest row (the query's
//! only `max()`).

use std::sync::LazyLock;

use deadpool_sqlite::rusqlite::types::{Type, Value};
use deadpool_sqlite::rusqlite::{self, Connection, Row, params_from_iter};

use super::{get_u64, saturate};
use crate::store::sample_tables::{ColType, TABLES, TableSpec, bucket_width, sample_tables, spec};
use crate::store::samples::{
    AlertDeliveryRow, AlertEventRow, DiskRow, FilesystemRow, HeartbeatCheckRow, HeartbeatPingRow,
    HeartbeatStateRow, InterfaceRow, NodeRow, PodRow, SampleKind, Scope, ServiceRow, SiteDiskRow,
    SiteProcessRow, StatsQuery, WatchdogEventRow,
};
use crate::store::{Rows, RowsRef};

/// A row field as SQLite stores it.
trait SqlColumn: Sized {
    fn value(&self) -> Value;
    fn read(row: &Row<'_>, index: usize) -> rusqlite::Result<Self>;
}

impl SqlColumn for String {
    fn value(&self) -> Value {
        Value::Text(self.clone())
    }
    fn read(row: &Row<'_>, index: usize) -> rusqlite::Result<Self> {
        row.get(index)
    }
}

impl SqlColumn for u32 {
    fn value(&self) -> Value {
        Value::Integer(i64::from(*self))
    }
    fn read(row: &Row<'_>, index: usize) -> rusqlite::Result<Self> {
        let value: i64 = row.get(index)?;
        u32::try_from(value).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(index, Type::Integer, Box::new(e))
        })
    }
}

impl SqlColumn for u64 {
    fn value(&self) -> Value {
        Value::Integer(saturate(*self))
    }
    fn read(row: &Row<'_>, index: usize) -> rusqlite::Result<Self> {
        get_u64(row, index)
    }
}

impl SqlColumn for f64 {
    fn value(&self) -> Value {
        Value::Real(*self)
    }
    fn read(row: &Row<'_>, index: usize) -> rusqlite::Result<Self> {
        row.get(index)
    }
}

impl SqlColumn for Option<f64> {
    fn value(&self) -> Value {
        self.map_or(Value::Null, Value::Real)
    }
    fn read(row: &Row<'_>, index: usize) -> rusqlite::Result<Self> {
        row.get(index)
    }
}

impl SqlColumn for bool {
    fn value(&self) -> Value {
        Value::Integer(i64::from(*self))
    }
    fn read(row: &Row<'_>, index: usize) -> rusqlite::Result<Self> {
        row.get(index)
    }
}

macro_rules! sqlite_rows {
    ($($field:ident: $row:ident = $kind:ident, $table:literal, by $by:ident,
       since $since:literal, only $only:ident,
       things [$($thing:ident),*], digest $digest:literal,
       { $($col:ident: $ty:ty),* $(,)? });* $(;)?) => {
        /// Writes one batch's sample rows inside its transaction (the
        /// identity column = the batch's agent), kind after kind in [`Rows`]' order.
        pub(super) fn write_sample_rows(
            tx: &rusqlite::Transaction<'_>,
            agent: &str,
            seq: u64,
            rows: RowsRef<'_>,
        ) -> rusqlite::Result<()> {
            let seq = i64::try_from(seq)
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            $(
                if !rows.$field.is_empty() {
                    let mut insert = tx.prepare_cached(insert_sql(SampleKind::$kind))?;
                    for r in rows.$field {
                        let values = [Value::Text(agent.to_owned()), $(r.$col.value(),)* Value::Integer(seq)];
                        insert.execute(params_from_iter(values))?;
                    }
                }
            )*
            Ok(())
        }

        /// Runs a read rendered by [`stats_sql`] into its set of [`Rows`].
        pub(super) fn stats(conn: &Connection, kind: SampleKind, sql: &str, values: Vec<Value>) -> rusqlite::Result<Rows> {
            let mut out = Rows::default();
            let mut statement = conn.prepare_cached(sql)?;
            let mut rows = statement.query(params_from_iter(values))?;
            while let Some(row) = rows.next()? {
                match kind {
                    $(SampleKind::$kind => {
                        let mut index = 1..;
                        out.$field.push($row {
                            $by: row.get(0)?,
                            $($col: SqlColumn::read(row, index.next().unwrap_or_default())?,)*
                        });
                    })*
                }
            }
            Ok(out)
        }
    };
}
sample_tables!(sqlite_rows);

/// `CREATE TABLE` and indexes of every sample table: the sort key of
/// ClickHouse's table ("this node or site over the last hour", and the
/// newest row of one thing) and `ts` ("every node now", retention).
/// Only the tables of schema `version`.
pub(super) fn migration_sql(version: u32) -> String {
    TABLES
        .iter()
        .filter(|t| t.version == version)
        .map(table_sql)
        .collect()
}

fn table_sql(table: &TableSpec) -> String {
    let columns: Vec<String> = table
        .columns
        .iter()
        .map(|(name, ty)| {
            let ty = match ty {
                ColType::Text => "TEXT NOT NULL",
                ColType::U32 | ColType::U64 | ColType::Bool => "INTEGER NOT NULL",
                ColType::F64 => "REAL NOT NULL",
                ColType::OptF64 => "REAL",
            };
            format!("    {name} {ty},\n")
        })
        .collect();
    let name = table.table;
    format!(
        "CREATE TABLE IF NOT EXISTS {name} (\n{}    seq INTEGER NOT NULL\n);\n\
         CREATE INDEX IF NOT EXISTS {name}_key ON {name} ({});\n\
         CREATE INDEX IF NOT EXISTS {name}_ts ON {name} (ts);\n",
        columns.concat(),
        table.sort_key().join(", ")
    )
}

/// The INSERT of each table, in [`TABLES`] order.
static INSERTS: LazyLock<Vec<String>> = LazyLock::new(|| {
    TABLES
        .iter()
        .map(|t| {
            let names = t.column_names();
            let marks: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
            format!(
                "INSERT INTO {} ({}) VALUES ({})",
                t.table,
                names.join(", "),
                marks.join(", ")
            )
        })
        .collect()
});

fn insert_sql(kind: SampleKind) -> &'static str {
    let index = TABLES.iter().position(|t| t.kind == kind).unwrap_or(0);
    &INSERTS[index]
}

/// Retention: deletes of each expiring table's rows with `ts < ?1`, `?2`
/// at a time, in the order of the tables that [`TableSpec::expires`].
pub(super) static EXPIRE: LazyLock<Vec<String>> = LazyLock::new(|| {
    TABLES
        .iter()
        .filter(|t| t.expires())
        .map(|t| {
            format!(
                "DELETE FROM {name} WHERE rowid IN \
                 (SELECT rowid FROM {name} WHERE ts < ?1 LIMIT ?2)",
                name = t.table
            )
        })
        .collect()
});

/// `query` as SQL and values, `None` for an empty history range.
pub(super) fn stats_sql(query: &StatsQuery<'_>) -> Option<(String, Vec<Value>)> {
    let table = spec(query.kind);
    Some(match &query.scope {
        Scope::Latest(latest) => {
            let mut values = vec![Value::Integer(saturate(latest.since_ms))];
            values.extend(latest.only.map(|only| Value::Text(only.to_owned())));
            (latest_sql(table, latest.only.is_some()), values)
        }
        Scope::History(history) => {
            let width = bucket_width(history)?;
            let values = vec![
                Value::Integer(saturate(history.since_ms)),
                Value::Integer(saturate(width)),
                Value::Integer(saturate(history.until_ms)),
                Value::Text(history.of.to_owned()),
            ];
            (history_sql(table), values)
        }
        Scope::Newest(newest) => {
            let of = &newest.of[..newest.of.len().min(table.things.len())];
            let mut values: Vec<Value> = of.iter().map(|v| Value::Text((*v).to_owned())).collect();
            values.push(Value::Integer(i64::from(newest.limit)));
            (newest_sql(table, of.len()), values)
        }
    })
}

/// Binds: the first `of` thing columns' values, then the limit. Ties in
/// `ts` go to the row written last.
fn newest_sql(table: &TableSpec, of: usize) -> String {
    let columns: Vec<&str> = table.columns.iter().map(|(name, _)| *name).collect();
    let filter: Vec<String> = table.things[..of]
        .iter()
        .enumerate()
        .map(|(i, name)| format!("{name} = ?{}", i + 1))
        .collect();
    let filter = if filter.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", filter.join(" AND "))
    };
    format!(
        "SELECT {} FROM {}{filter} ORDER BY ts DESC, rowid DESC LIMIT ?{}",
        columns.join(", "),
        table.table,
        of + 1
    )
}

/// Binds: since, then the node or site when `only`.
fn latest_sql(table: &TableSpec, only: bool) -> String {
    let key = table.key();
    let columns: Vec<String> = table
        .columns
        .iter()
        .map(|(name, _)| match *name {
            "ts" => "max(ts)".to_owned(),
            other => other.to_owned(),
        })
        .collect();
    let filter = if only {
        format!(" AND {} = ?2", table.only)
    } else {
        String::new()
    };
    format!(
        "SELECT {} FROM {} WHERE ts >= ?1{filter} GROUP BY {keys} ORDER BY {keys}",
        columns.join(", "),
        table.table,
        keys = key.join(", ")
    )
}

/// Binds: since, bucket width, until, the node or site.
fn history_sql(table: &TableSpec) -> String {
    let key = table.key();
    let columns: Vec<String> = table
        .columns
        .iter()
        .map(|(name, ty)| {
            if *name == "ts" {
                return "?1 + ((ts - ?1) / ?2) * ?2 AS bucket_start".to_owned();
            }
            if key.contains(name) {
                return (*name).to_owned();
            }
            match ty {
                ColType::Text => (*name).to_owned(),
                ColType::Bool => format!("sum({name}) > 0"),
                ColType::U32 | ColType::U64 => format!("CAST(avg({name}) AS INTEGER)"),
                ColType::F64 | ColType::OptF64 => format!("avg({name})"),
            }
        })
        .collect();
    format!(
        "SELECT {}, max(ts) FROM {} WHERE {} = ?4 AND ts >= ?1 AND ts <= ?3 \
         GROUP BY {keys}, (ts - ?1) / ?2 ORDER BY {keys}, bucket_start",
        columns.join(", "),
        table.table,
        table.only,
        keys = key.join(", ")
    )
}
