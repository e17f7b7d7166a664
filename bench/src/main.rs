//! `livehead-bench`: livehead side by side with what it replaces, one command,
//! one table per part. See bench/README.md.

mod alert;
mod api;
mod clickhouse;
mod footprint;
mod ingest;
mod livehead;
mod nginx;
mod probe;
mod proc;
mod table;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    /// Probe rounds: the old bash+curl script vs `livehead agent --once`.
    Probe,
    /// gRPC ingest through the collector into ClickHouse vs clickhouse-client.
    Ingest,
    /// The agent's resident memory and CPU next to prometheus-node-exporter.
    Footprint,
    /// `/last` and `/dump_last` latency under load, ClickHouse and SQLite.
    Api,
    /// Failing probe → alerter → webhook receiver latency, fastest settings
    /// and defaults side by side.
    Alert,
}

#[derive(Debug, Parser)]
#[command(
    name = "livehead-bench",
    about = "livehead's benchmarks (bench/README.md)"
)]
struct Cli {
    /// Parts to run, in order; all of them when none is given.
    #[arg(value_enum)]
    parts: Vec<Part>,
    /// The livehead binary under test (default: `livehead` next to this one).
    #[arg(long)]
    livehead: Option<PathBuf>,
    /// Keep the working directory (configs, logs, databases) and print its path.
    #[arg(long)]
    keep: bool,
    #[command(flatten)]
    probe: probe::Args,
    #[command(flatten)]
    ingest: ingest::Args,
    #[command(flatten)]
    footprint: footprint::Args,
    #[command(flatten)]
    api: api::Args,
    #[command(flatten)]
    alert: alert::Args,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let bin = match cli.livehead {
        Some(path) => path,
        None => std::env::current_exe()?
            .parent()
            .context("the benchmark binary has no directory")?
            .join("livehead"),
    };
    anyhow::ensure!(
        bin.exists(),
        "{} not found: build it with `cargo build --release`",
        bin.display()
    );
    let dir = tempfile::Builder::new()
        .prefix("livehead-bench-")
        .tempdir()?;
    let env = livehead::Env {
        bin,
        dir: dir.path().to_owned(),
    };
    let parts = if cli.parts.is_empty() {
        Part::value_variants().to_vec()
    } else {
        cli.parts
    };
    println!("{}", machine());
    for part in parts {
        let tables = match part {
            Part::Probe => probe::run(&env, &cli.probe),
            Part::Ingest => ingest::run(&env, &cli.ingest),
            Part::Footprint => footprint::run(&env, &cli.footprint),
            Part::Api => api::run(&env, &cli.api),
            Part::Alert => alert::run(&env, &cli.alert),
        }
        .with_context(|| format!("benchmark part {part:?} (files in {})", env.dir.display()))?;
        for table in tables {
            println!("{table}");
        }
    }
    if cli.keep {
        println!("working directory kept: {}", dir.keep().display());
    }
    Ok(())
}

/// One line naming the machine the figures come from.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "Machine: {cores} cores ({cpu}), {mem_gib:.0} GiB, Linux {}\n",
        kernel.trim()
    )
}
