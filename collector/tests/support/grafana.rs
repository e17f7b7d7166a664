//! The Grafana dashboards of `deploy/grafana/dashboards/`: every query they
//! run (panels and template variables) with Grafana's variables replaced as
//! Grafana would, and rows for every panel to find. Both ClickHouse test
//! files run them: `clickhouse_store.rs` on 18.16, `chdb_schema.rs` on a
//! current ClickHouse.

use std::path::Path;

use serde_json::Value;

/// One query of one dashboard, ready to run.
pub struct Query {
    /// `dashboard file / panel or variable title`, for failure messages.
    pub name: String,
    pub sql: String,
}

/// The node every seeded sample comes from, and the `$node` variable's value.
pub const NODE: &str = "edge-1";

/// `$__interval_ms`: what Grafana picks for a 6-hour range on a wide panel.
const INTERVAL_MS: u64 = 60_000;

/// Every query of every dashboard file, with `$__from`/`$__to` a 6-hour range
/// ending a minute after `now_ms`.
pub fn queries(now_ms: u64) -> Vec<Query> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/dashboards");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("read {}: {err}", dir.display()))
        .map(|entry| entry.expect("dashboard entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "fleet, node and alerts dashboards in {dir:?}"
    );
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read dashboard");
        let board: Value = serde_json::from_str(&text)
            .unwrap_or_else(|err| panic!("{} is not JSON: {err}", file.display()));
        let file_name = file.file_name().expect("file name").to_string_lossy();
        for (title, sql) in board_queries(&board) {
            out.push(Query {
                name: format!("{file_name} / {title}"),
                sql: substitute(&sql, now_ms),
            });
        }
    }
    out
}

/// (title, SQL) of every panel target and query variable of a dashboard.
fn board_queries(board: &Value) -> Vec<(String, String)> {
    let text = |v: &Value, key: &str| v[key].as_str().unwrap_or_default().to_owned();
    let mut out = Vec::new();
    for variable in board["templating"]["list"].as_array().into_iter().flatten() {
        out.push((
            format!("${}", text(variable, "name")),
            text(variable, "query"),
        ));
    }
    for panel in board["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            assert_eq!(
                target["datasource"]["uid"], "livehead-clickhouse",
                "panel {} uses the provisioned data source",
                panel["title"]
            );
            out.push((text(panel, "title"), text(target, "rawSql")));
        }
    }
    out
}

/// `sql` with the variables Grafana replaces; anything else left with a `$`
/// would reach ClickHouse as is, so it fails here.
fn substitute(sql: &str, now_ms: u64) -> String {
    let from = now_ms - 6 * 3_600_000;
    let to = now_ms + 60_000;
    let out = sql
        .replace("$__interval_ms", &INTERVAL_MS.to_string())
        .replace("$__from", &from.to_string())
        .replace("$__to", &to.to_string())
        .replace("${node}", NODE);
    assert!(!out.contains('$'), "an unknown Grafana variable in {sql}");
    out
}

/// `INSERT`s giving every panel rows: the columns each panel reads, the
/// others left to their defaults. `now_ms` must be recent (retention).
pub fn seed(now_ms: u64) -> Vec<String> {
    let t = |ago_s: u64| now_ms - ago_s * 1000;
    let in_a_week = now_ms + 7 * 86_400_000;
    let probe_columns = "site, status, ms, location, cross, ts, cert_expiry, agent, cert_trust, content, content_failure";
    let probes = [
        format!(
            "'up.example', 200, 120, '', 0, {}, 0, '{NODE}', '', '', ''",
            t(60)
        ),
        format!(
            "'down.example', 503, 40, '', 0, {}, 0, '{NODE}', '', 'failed', 'at least 512 bytes'",
            t(50)
        ),
        format!(
            "'away.example', 301, 30, 'https://elsewhere.example/', 1, {}, {in_a_week}, '{NODE}', \
             'expired', '', ''",
            t(40)
        ),
    ];
    let tuples = |extra: &str| {
        let rows: Vec<String> = probes.iter().map(|p| format!("({p}{extra})")).collect();
        rows.join(", ")
    };
    let mut out = vec![
        format!(
            "INSERT INTO health_history ({probe_columns}, seq) VALUES {}",
            tuples(", 9")
        ),
        format!(
            "INSERT INTO health_last ({probe_columns}) VALUES {}",
            tuples("")
        ),
        format!(
            "INSERT INTO node_samples (node, ts, cpu_busy_pct, cpu_user_pct, mem_used_pct, \
             swap_total_bytes, swap_free_bytes, load1, psi_cpu_some, open_fds, tasks_total, seq) \
             VALUES ('{NODE}', {}, 35.5, 20, 61.2, 1000, 250, 1.5, 2.5, 900, 310, 1), \
             ('{NODE}', {}, 45.5, 30, 62.2, 1000, 250, 2.5, NULL, 910, 312, 2)",
            t(120),
            t(60)
        ),
    ];
    for (table, columns, values) in [
        ("filesystem_samples", "mountpoint, used_pct", "'/', 71.5"),
        (
            "disk_samples",
            "device, read_bytes_per_s, write_bytes_per_s",
            "'vda', 1000, 2000",
        ),
        (
            "interface_samples",
            "interface, rx_bytes_per_s, tx_bytes_per_s",
            "'eth0', 5000, 7000",
        ),
        (
            "pod_samples",
            "pod, cpu_pct, memory_current_bytes, oom_kills",
            "'wp-1', 12.5, 1000000, 1",
        ),
        (
            "service_states",
            "unit, site, active_state, sub_state, restarts",
            "'php8.2-fpm', 'up.example', 'active', 'running', 2",
        ),
        (
            "site_process_samples",
            "site, user, processes, cpu_pct, rss_bytes",
            "'up.example', 'up', 4, 3.5, 50000000",
        ),
        (
            "site_disk_samples",
            "site, disk_bytes, file_count",
            "'up.example', 123456789, 4000",
        ),
        (
            "watchdog_events",
            "app, kind, attempt, reason",
            "'shop', 'recovery_started', 1, 'health check failed'",
        ),
    ] {
        out.push(format!(
            "INSERT INTO {table} (node, ts, {columns}, seq) VALUES ('{NODE}', {}, {values}, 3)",
            t(30)
        ));
    }
    out.push(format!(
        "INSERT INTO alert_events (agent, ts, alert_id, rule, severity, node, site, state, summary, since_ms, seq) VALUES \
         ('alerter', {}, 'a1', 'site_down', 'critical', '{NODE}', 'down.example', 'firing', 'down.example is down', {}, 4), \
         ('alerter', {}, 'a2', 'site_down', 'critical', '{NODE}', 'up.example', 'firing', 'up.example is down', {}, 4), \
         ('alerter', {}, 'a2', 'site_down', 'critical', '{NODE}', 'up.example', 'resolved', 'up.example is up', {}, 5)",
        t(50),
        t(50),
        t(300),
        t(300),
        t(100),
        t(300)
    ));
    out.push(format!(
        "INSERT INTO alert_deliveries (agent, ts, notification_id, receiver, state, attempt, outcome, http_status, seq) \
         VALUES ('alerter', {}, 'n1', 'slack-ops', 'firing', 1, 'sent', 200, 6)",
        t(49)
    ));
    out.push(format!(
        "INSERT INTO heartbeat_states (agent, ts, check_id, name, status, previous, reason, seq) \
         VALUES ('alerter', {}, 'c1', 'nightly-backup', 'down', 'grace', 'no ping for 2 h', 7)",
        t(20)
    ));
    out
}
