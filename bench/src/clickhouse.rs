//! `clickhouse-client` on a testkit server: statements for the benchmarks'
//! set-up and checks, and the ceiling's inserts.

use std::process::{Command, Stdio};

use anyhow::{Context, ensure};
use livehead_testkit::clickhouse::ClickHouseServer;

/// Runs one statement; answers its output.
pub fn query(clickhouse: &ClickHouseServer, sql: &str) -> anyhow::Result<String> {
    let output = client(clickhouse)
        .arg("--query")
        .arg(sql)
        .stdin(Stdio::null())
        .output()
        .context("running clickhouse-client")?;
    ensure!(
        output.status.success(),
        "clickhouse-client failed ({}) for {sql:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).context("clickhouse-client printed non-UTF-8")
}

/// `clickhouse-client`, honouring testkit's `LIVEHEAD_CLICKHOUSE_CLIENT`.
pub fn client_binary() -> std::ffi::OsString {
    std::env::var_os("LIVEHEAD_CLICKHOUSE_CLIENT").unwrap_or_else(|| "clickhouse-client".into())
}

/// `clickhouse-client` on the test server.
pub fn client(clickhouse: &ClickHouseServer) -> Command {
    let mut command = Command::new(client_binary());
    command
        .args(["--host", "127.0.0.1", "--port"])
        .arg(clickhouse.tcp_port().to_string());
    command
}
