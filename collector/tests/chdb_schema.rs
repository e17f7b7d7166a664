//! The Modern flavour on a current ClickHouse, without a server: renders the DDL
//! and the queries the store runs (literals in place of the `?` binds; the store's
//! RowBinary inserts as `VALUES` with the same column lists) and runs them with
//! chdb (`collector/tests/chdb_check.py`). Never skips: without python3 or chdb it
//! fails and says how to install them.

mod support;

use std::path::Path;
use std::process::Command;

use livehead_collector::store::clickhouse::Flavour;
use livehead_collector::store::clickhouse::samples::{history_sql, latest_sql};
use livehead_collector::store::clickhouse::schema::{
    self, APPLIED_VERSIONS_SQL, BATCHES_SEEN_SQL, COLUMN_EXISTS_SQL, CREATE_DATABASE_SQL,
    DROP_PARTITION_SQL, ENGINE_FULL_SQL, STALE_PARTITIONS_SQL,
};
use livehead_collector::store::sample_tables::{ColType, TABLES as SAMPLE_TABLES, TableSpec};
use livehead_collector::store::{self, Order, StorageConfig};
use serde_json::{Value, json};

const INSTALL: &str = "install chdb with `pip install chdb`";

/// `sql` with each `?` replaced by the next literal.
fn render(sql: &str, literals: &[&str]) -> String {
    let parts: Vec<&str> = sql.split('?').collect();
    assert_eq!(parts.len(), literals.len() + 1, "binds of {sql}");
    let mut out = parts[0].to_owned();
    for (literal, part) in literals.iter().zip(&parts[1..]) {
        out.push_str(literal);
        out.push_str(part);
    }
    out
}

fn string(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn identifier(s: &str) -> String {
    format!("`{}`", s.replace('`', "\\`"))
}

fn columns(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| identifier(n))
        .collect::<Vec<_>>()
        .join(", ")
}

struct Steps(Vec<Value>);

impl Steps {
    fn run(&mut self, note: &str, sql: impl Into<String>) {
        self.0.push(json!({ "note": note, "sql": sql.into() }));
    }
    fn expect(&mut self, note: &str, sql: impl Into<String>, expect: &str) {
        self.0
            .push(json!({ "note": note, "sql": sql.into(), "expect": expect }));
    }
    fn contains(&mut self, note: &str, sql: impl Into<String>, needle: &str) {
        self.0
            .push(json!({ "note": note, "sql": sql.into(), "expect_contains": needle }));
    }
    fn absent(&mut self, note: &str, sql: impl Into<String>, needle: &str) {
        self.0
            .push(json!({ "note": note, "sql": sql.into(), "expect_absent": needle }));
    }

    fn create_schema(&mut self, flavour: Flavour, database: &str) {
        self.run(
            "create database",
            render(CREATE_DATABASE_SQL, &[&identifier(database)]),
        );
        self.run("use", format!("USE {}", identifier(database)));
        // Twice: every statement is idempotent.
        for round in ["first", "second"] {
            self.run(&format!("bootstrap ({round})"), schema::bootstrap());
            for migration in schema::migrations(flavour) {
                for statement in &migration.statements {
                    let note = format!("migration {} ({round})", migration.version);
                    // The store skips an ADD COLUMN whose column exists, and
                    // the re-keying of health_last once it has its vantage.
                    match schema::skip_when(statement) {
                        Some((table, column)) if round == "second" => self.expect(
                            &note,
                            render(COLUMN_EXISTS_SQL, &[&string(table), &string(column)]),
                            "1\n",
                        ),
                        _ => self.run(&note, statement),
                    }
                }
            }
        }
    }

    /// The TTLs the store would apply at start for `retention_days`, given the
    /// tables' current `engine_full` ("" for fresh tables, or [`OTHER_TTL`]).
    fn apply_ttl(&mut self, retention_days: u32, engine_full: &str) {
        let config = StorageConfig {
            retention_days,
            ..StorageConfig::default()
        };
        for ttl in schema::table_ttls(&config) {
            // A table that never expires (heartbeat_checks) never had a TTL.
            let kept = SAMPLE_TABLES
                .iter()
                .any(|t| t.table == ttl.table && !t.expires());
            let engine_full = if kept { "" } else { engine_full };
            if let Some(statement) = schema::ttl_statement(&ttl, engine_full) {
                self.run(
                    &format!("ttl {} ({retention_days} days)", ttl.table),
                    statement,
                );
            }
            let query = render(ENGINE_FULL_SQL, &[&string(ttl.table)]);
            match &ttl.expression {
                // What the store reads back to skip an unchanged TTL.
                Some(expr) => {
                    self.contains("engine_full shows the TTL", query, &format!(" TTL {expr}"))
                }
                None => self.absent("engine_full shows no TTL", query, " TTL "),
            }
        }
    }
}

/// `engine_full` of a table that has some other TTL than the wanted one.
const OTHER_TTL: &str =
    "MergeTree ORDER BY site TTL toDateTime(0) SETTINGS index_granularity = 8192";

/// The certificate trust and content check of every probe row.
const TRUST_AND_CONTENT: [&str; 5] = [
    "self_signed",
    "self-signed",
    "failed",
    "at least 512 bytes",
    "<p>",
];
/// [`TRUST_AND_CONTENT`] and the vantage (migration 8) as a server prints
/// them after a row's other columns.
const CHECKS_OUT: &str = "\tself_signed\tself-signed\tfailed\tat least 512 bytes\t<p>\tinside";

fn probe_values(site: &str, status: u16, ts: u64, agent: &str, seq: Option<u64>) -> String {
    let mut values = vec![
        string(site),
        status.to_string(),
        "123".into(),
        "443".into(),
        string(&format!("https://www.{site}/")),
        "1".into(),
        ts.to_string(),
        "123456".into(),
        "2345".into(),
        "98765".into(),
        string(""),
        string("GET"),
        string(&format!("https://{site}/")),
        "1900000000000".into(),
        string(agent),
    ];
    if let Some(seq) = seq {
        values.push(seq.to_string());
    }
    // Added by migration 7, after `seq`, then migration 8's vantage.
    values.extend(TRUST_AND_CONTENT.iter().map(|v| string(v)));
    values.push(string("inside"));
    format!("({})", values.join(", "))
}

/// A row of a sample table as `VALUES`: the sender (`node` or `agent`) is
/// edge-1, `site` a.example,
/// other text columns their own name, numbers 7 (UInt64), 3 (UInt32), 1.5.
fn sample_values(table: &TableSpec, ts: u64, seq: u64) -> String {
    let values: Vec<String> = table
        .columns
        .iter()
        .map(|(name, ty)| match (*name, ty) {
            (name, _) if name == table.by => string("edge-1"),
            ("site", _) => string("a.example"),
            ("ts", _) => ts.to_string(),
            (name, ColType::Text) => string(name),
            (_, ColType::U64) => "7".into(),
            (_, ColType::U32) => "3".into(),
            (_, ColType::F64) => "1.5".into(),
            (_, ColType::OptF64) => "NULL".into(),
            (_, ColType::Bool) => "1".into(),
        })
        .chain([seq.to_string()])
        .collect();
    format!("({})", values.join(", "))
}

/// The types of a read's columns (a SELECT list), and what the read structs
/// want of them.
fn answer_types(table: &TableSpec) -> (String, String) {
    let types: Vec<String> = table
        .columns
        .iter()
        .map(|(name, _)| {
            format!("replaceRegexpAll(toTypeName({name}), '^LowCardinality\\((.*)\\)$', '\\1')")
        })
        .collect();
    let expected: Vec<&str> = table
        .columns
        .iter()
        .map(|(_, ty)| match ty {
            ColType::Text => "String",
            ColType::U32 => "UInt32",
            ColType::U64 => "UInt64",
            ColType::F64 => "Float64",
            ColType::OptF64 => "Nullable(Float64)",
            ColType::Bool => "Bool",
        })
        .collect();
    (types.join(", "), expected.join("\t") + "\n")
}

/// Each sample table: a row inserted as the store's writer does, the marker
/// its view writes (with the digest Rust computes), and the `/stats` reads.
fn sample_steps(s: &mut Steps, ts: u64) {
    for (seq, table) in (100u64..).zip(SAMPLE_TABLES) {
        s.run(
            &format!("{} insert", table.table),
            format!(
                "INSERT INTO {} ({}) VALUES {}",
                table.table,
                columns(&table.column_names()),
                sample_values(table, ts, seq)
            ),
        );
        let inner = |function: &str| {
            table
                .digest_key
                .strip_prefix(function)
                .and_then(|k| k.strip_suffix(')'))
        };
        // The values `sample_values` gives: a text column's name, 3 for a
        // UInt32 (`toUInt64` of it), 7 for a UInt64.
        let key = match (inner("length("), inner("toUInt64(")) {
            (Some(column), _) => column.len() as u64,
            (_, Some(_)) => 3,
            _ => 7,
        };
        let agents = format!("[{}]", string("edge-1"));
        s.expect(
            &format!("{} marker", table.table),
            render(BATCHES_SEEN_SQL, &[&agents, &format!("[{seq}]")]),
            &format!("edge-1\t{seq}\t1\t{}\n", store::row_digest(ts, key)),
        );
        let only = if table.only == "site" {
            string("a.example")
        } else {
            string("edge-1")
        };
        s.contains(
            &format!("{} latest", table.table),
            render(&latest_sql(table, false), &["0"]),
            &format!("edge-1\t{ts}\t"),
        );
        s.expect(
            &format!("{} latest of one", table.table),
            format!(
                "SELECT count() FROM ({})",
                render(&latest_sql(table, true), &["0", &only])
            ),
            "1\n",
        );
        let (since, until) = ((ts - 1000).to_string(), (ts + 1000).to_string());
        let history = render(
            &history_sql(table),
            &[&since, "201", &since, "201", &only, &since, &until],
        );
        s.expect(
            &format!("{} history", table.table),
            format!("SELECT ts, count() FROM ({history}) GROUP BY ts"),
            &format!("{}\t1\n", ts - 1000 + 201 * (1000 / 201)),
        );
        // The client's schema validation (on from 22.3) takes these types
        // for the read structs' fields (LowCardinality stripped).
        let (types, expected) = answer_types(table);
        for (read, sql) in [
            ("latest", render(&latest_sql(table, false), &["0"])),
            ("history", history),
        ] {
            s.expect(
                &format!("{} {read} types", table.table),
                format!("SELECT {types} FROM ({sql}) LIMIT 1"),
                &expected,
            );
        }
    }
}

fn steps() -> Vec<Value> {
    // Recent probes: the history TTL must not expire them during the run.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64;
    let (t1, t2, t3) = (now - 3_000, now - 2_000, now - 1_000);
    let mut s = Steps(Vec::new());
    s.create_schema(Flavour::Modern, "livehead");
    let mut tables = vec![
        "health_history\tMergeTree\n".to_owned(),
        "health_last\tReplacingMergeTree\n".to_owned(),
        "ingest_batches\tMergeTree\n".to_owned(),
        "ingest_batches_mv\tMaterializedView\n".to_owned(),
        "schema_migrations\tReplacingMergeTree\n".to_owned(),
    ];
    for table in SAMPLE_TABLES {
        tables.push(format!("{}\tMergeTree\n", table.table));
        tables.push(format!("{}_batches_mv\tMaterializedView\n", table.table));
    }
    tables.sort();
    s.expect(
        "tables",
        "SELECT name, engine FROM system.tables WHERE database = currentDatabase() ORDER BY name",
        &tables.concat(),
    );
    s.expect(
        "low cardinality and codecs",
        "SELECT type, compression_codec FROM system.columns WHERE database = currentDatabase() \
         AND table = 'health_history' AND name IN ('site', 'ts', 'latency_us') ORDER BY name",
        "UInt64\tCODEC(T64, ZSTD(1))\nLowCardinality(String)\t\nUInt64\tCODEC(Delta(8), ZSTD(1))\n",
    );

    // Migrations bookkeeping, as the store records it.
    let migration_columns = columns(&schema::migration_columns());
    for migration in schema::migrations(Flavour::Modern) {
        s.run(
            "record migration",
            format!(
                "INSERT INTO schema_migrations ({migration_columns}) VALUES ({}, {}, now())",
                migration.version,
                string(migration.name)
            ),
        );
    }
    s.expect(
        "applied versions",
        APPLIED_VERSIONS_SQL,
        "1\n2\n3\n4\n5\n6\n7\n8\n",
    );

    // Table TTLs at start: set, unchanged, changed, removed, set again.
    s.apply_ttl(30, "");
    s.apply_ttl(30, OTHER_TTL);
    s.apply_ttl(90, OTHER_TTL);
    s.apply_ttl(0, OTHER_TTL);
    s.apply_ttl(30, "");

    // A batch with history on: rows into health_last, then health_history whose
    // view writes the marker.
    let seen = |agent: &str, seq: &str| {
        let (agents, seqs) = (format!("[{}]", string(agent)), format!("[{seq}]"));
        render(BATCHES_SEEN_SQL, &[&agents, &seqs])
    };
    s.expect("unknown batch", seen("edge-1", "1"), "");
    // The markers' digest (`store::digest`): probe_values' latency is 123456.
    let digest = |ts: &[u64]| {
        ts.iter()
            .fold(0u64, |d, t| d.wrapping_add(store::row_digest(*t, 123_456)))
    };
    let last_columns = columns(&schema::last_columns());
    let history_columns = columns(&schema::history_columns());
    s.run(
        "health_last insert",
        format!(
            "INSERT INTO health_last ({last_columns}) VALUES {}, {}",
            probe_values("a.example", 200, t2, "edge-1", None),
            probe_values("b.example", 200, t1, "edge-1", None)
        ),
    );
    s.run(
        "health_history insert",
        format!(
            "INSERT INTO health_history ({history_columns}) VALUES {}, {}",
            probe_values("a.example", 200, t2, "edge-1", Some(1)),
            probe_values("b.example", 200, t1, "edge-1", Some(1))
        ),
    );
    s.expect(
        "marker written by the view",
        seen("edge-1", "1"),
        &format!("edge-1\t1\t2\t{}\n", digest(&[t2, t1])),
    );
    // An older batch written after the newer one.
    s.run(
        "older health_last insert",
        format!(
            "INSERT INTO health_last ({last_columns}) VALUES {}",
            probe_values("a.example", 503, t1, "edge-2", None)
        ),
    );
    s.expect(
        "FINAL keeps the newest per site",
        "SELECT site, status, ts, agent FROM health_last FINAL ORDER BY site",
        &format!("a.example\t200\t{t2}\tedge-1\nb.example\t200\t{t1}\tedge-1\n"),
    );
    // The API's reads see the newest state only.
    s.expect(
        "last",
        render(schema::LAST_SQL, &[&string("a.example"), &string("inside")]),
        &format!("a.example\t200\t123\t443\thttps://www.a.example/\t1\t{t2}{CHECKS_OUT}\n"),
    );
    let dump = |conditions: &str, literals: &[&str]| {
        let sql = schema::dump_last_sql(conditions, Order::Desc.order_by());
        render(&sql, literals)
    };
    s.expect(
        "dump_last, no filter",
        dump("vantage = ?", &[&string("inside"), "0", "1000"]),
        &format!(
            "a.example\t200\t123\t443\thttps://www.a.example/\t1\t{t2}{CHECKS_OUT}\n\
             b.example\t200\t123\t443\thttps://www.b.example/\t1\t{t1}{CHECKS_OUT}\n"
        ),
    );
    // The watch snapshot's probes: every column of the newest row per site.
    s.expect(
        "latest probes",
        render(schema::LATEST_PROBES_SQL, &["0"]),
        &format!(
            "a.example\t200\t123\t443\thttps://www.a.example/\t1\t{t2}\t123456\t2345\t98765\t\tGET\thttps://a.example/\t1900000000000\tedge-1{CHECKS_OUT}\n\
             b.example\t200\t123\t443\thttps://www.b.example/\t1\t{t1}\t123456\t2345\t98765\t\tGET\thttps://b.example/\t1900000000000\tedge-1{CHECKS_OUT}\n"
        ),
    );
    s.expect(
        "latest probes types",
        format!(
            "SELECT toTypeName(status), toTypeName(ms), toTypeName(port), toTypeName(`cross`), \
             toTypeName(ts), toTypeName(cert_expiry), \
             replaceRegexpAll(toTypeName(agent), '^LowCardinality\\((.*)\\)$', '\\1') \
             FROM ({}) LIMIT 1",
            render(schema::LATEST_PROBES_SQL, &["0"])
        ),
        "UInt16\tUInt32\tUInt16\tUInt8\tUInt64\tUInt64\tString\n",
    );
    // A newer probe of a.example from outside: a state of its own.
    s.expect(
        "health_last is keyed by vantage",
        "SELECT sorting_key FROM system.tables WHERE database = currentDatabase() \
         AND name = 'health_last'",
        "site, vantage\n",
    );
    s.run(
        "outside health_last insert",
        format!(
            "INSERT INTO health_last ({last_columns}) VALUES {}",
            probe_values("a.example", 502, t3, "prober-1", None).replace("'inside')", "'outside')")
        ),
    );
    s.expect(
        "last stays inside",
        render(schema::LAST_SQL, &[&string("a.example"), &string("inside")]),
        &format!("a.example\t200\t123\t443\thttps://www.a.example/\t1\t{t2}{CHECKS_OUT}\n"),
    );
    s.expect(
        "last from outside",
        format!(
            "SELECT status, vantage FROM ({})",
            render(
                schema::LAST_SQL,
                &[&string("a.example"), &string("outside")]
            )
        ),
        "502\toutside\n",
    );
    s.expect(
        "dump_last from outside",
        format!(
            "SELECT site, status, vantage FROM ({})",
            dump("vantage = ?", &[&string("outside"), "0", "1000"])
        ),
        "a.example\t502\toutside\n",
    );
    s.expect(
        "latest probes of every vantage",
        format!(
            "SELECT site, status, vantage FROM ({}) ORDER BY site, vantage",
            render(schema::LATEST_PROBES_SQL, &["0"])
        ),
        "a.example\t200\tinside\na.example\t502\toutside\nb.example\t200\tinside\n",
    );
    s.expect(
        "dump_last ignores the stale 503",
        dump(
            "vantage = ? AND status IN (?) AND site LIKE ?",
            &[&string("inside"), "503", &string("a.%"), "0", "1000"],
        ),
        "",
    );
    // An interrupted INSERT kept a prefix; the replay writes the rest.
    s.run(
        "cut history insert",
        format!(
            "INSERT INTO health_history ({history_columns}) VALUES {}",
            probe_values("c.example", 200, t3, "edge-1", Some(2))
        ),
    );
    s.expect(
        "partial marker",
        seen("edge-1", "2"),
        &format!("edge-1\t2\t1\t{}\n", digest(&[t3])),
    );
    s.run(
        "rest of the batch",
        format!(
            "INSERT INTO health_history ({history_columns}) VALUES {}, {}",
            probe_values("d.example", 200, t3, "edge-1", Some(2)),
            probe_values("e.example", 200, t3, "edge-1", Some(2))
        ),
    );
    s.expect(
        "markers add up",
        seen("edge-1", "2"),
        &format!("edge-1\t2\t3\t{}\n", digest(&[t3, t3, t3])),
    );
    // History off: the marker alone.
    s.run(
        "direct marker",
        format!(
            "INSERT INTO ingest_batches ({}) VALUES ({}, 3, 2, now(), 77)",
            columns(&schema::batch_columns()),
            string("edge-1")
        ),
    );
    s.expect(
        "direct marker seen",
        seen("edge-1", "3"),
        "edge-1\t3\t2\t77\n",
    );

    // The Legacy retention queries also parse on a current server.
    s.expect(
        "no stale partitions",
        render(STALE_PARTITIONS_SQL, &[&string("health_history"), "30"]),
        "",
    );
    s.run(
        "drop a partition",
        render(
            DROP_PARTITION_SQL,
            &[&identifier("health_history"), &string("19700101")],
        ),
    );
    s.expect(
        "history intact",
        "SELECT count() FROM health_history",
        "5\n",
    );
    sample_steps(&mut s, t1);

    // A database created on 18.x (Legacy DDL) after the server was upgraded: the
    // Modern start adds the TTLs, and the view still writes markers.
    s.create_schema(Flavour::Legacy, "upgraded");
    s.apply_ttl(30, "");
    s.run(
        "legacy history insert",
        format!(
            "INSERT INTO health_history ({history_columns}) VALUES {}",
            probe_values("a.example", 200, t2, "edge-1", Some(1))
        ),
    );
    s.expect(
        "legacy marker",
        seen("edge-1", "1"),
        &format!("edge-1\t1\t1\t{}\n", digest(&[t2])),
    );
    s.0
}

/// Runs `steps` on chdb and returns what the script printed; fails the
/// test on any failed step.
fn run_on_chdb(steps: Vec<Value>) -> String {
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("steps.json");
    let count = steps.len();
    std::fs::write(&file, json!({ "steps": steps }).to_string()).expect("write steps");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/chdb_check.py");

    let output = Command::new("python3")
        .arg(&script)
        .arg(&file)
        .output()
        .unwrap_or_else(|err| {
            panic!("cannot run python3 ({err}): install python3, then {INSTALL}")
        });
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "chdb check failed ({}); if chdb is missing, {INSTALL}\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains(&format!("ok: {count} steps")),
        "{stdout}\n{stderr}"
    );
    stdout
}

#[test]
fn modern_schema_and_queries_run_on_chdb() {
    let stdout = run_on_chdb(steps());
    let version = stdout
        .lines()
        .find_map(|l| l.strip_prefix("version: "))
        .unwrap_or_else(|| panic!("no version in:\n{stdout}"));
    assert_eq!(
        Flavour::for_server(version).ok(),
        Some(Flavour::Modern),
        "chdb {version} should get the Modern flavour"
    );
}

/// Every Grafana panel's SQL runs on a current ClickHouse and finds the rows
/// it shows (`clickhouse_store.rs` does the same on 18.16).
#[test]
fn grafana_dashboards_run_on_chdb() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64;
    let mut s = Steps(Vec::new());
    s.create_schema(Flavour::Modern, "livehead");
    for (i, insert) in support::grafana::seed(now).into_iter().enumerate() {
        s.run(&format!("grafana seed {i}"), insert);
    }
    for query in support::grafana::queries(now) {
        s.expect(
            &query.name,
            format!("SELECT count() > 0 FROM ({})", query.sql),
            "1\n",
        );
    }
    run_on_chdb(s.0);
}
