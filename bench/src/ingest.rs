//! Part: ingest. Probe results from agents' gRPC streams through the collector
//! into ClickHouse, side by side with the ceiling of the same server in the
//! same run: `clickhouse-client` inserting the same rows from a Native file.

use std::collections::VecDeque;
use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, ensure};
use livehead_agent::config::CollectorConnConfig;
use livehead_common::clock::unix_ms;
use livehead_common::tls::TlsFiles;
use livehead_proto::v1::ingest_service_client::IngestServiceClient;
use livehead_proto::v1::{
    ProbeMethod, ProbeResult, PushRequest, PushResponse, Record, record::Kind,
};
use livehead_testkit::clickhouse::ClickHouseServer;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::codec::CompressionEncoding;
use tonic::transport::Endpoint;

use crate::clickhouse::{client, client_binary, query};
use crate::livehead::{Collector, Env, StoreKind};
use crate::nginx;
use crate::proc::{self, Sample, Usage};
use crate::table::{Table, num};

// Every part's options are named `Args`: no group, or their names clash.
#[derive(Debug, clap::Args)]
#[group(skip)]
pub struct Args {
    /// Probe results sent through the collector (and inserted again for the ceiling).
    #[arg(id = "ingest-rows", long = "ingest-rows", default_value_t = 2_000_000)]
    pub rows: usize,
    /// Concurrent agent streams, each with its own connection and certificate
    /// (a fleet has one per node: hundreds).
    #[arg(id = "ingest-streams", long = "ingest-streams", default_value_t = 16)]
    pub streams: usize,
    /// Records per batch (the agent's default `batch.max_records`).
    #[arg(id = "ingest-batch", long = "ingest-batch", default_value_t = 500)]
    pub batch: usize,
    /// Unacknowledged batches per stream (the agent's default `max_in_flight`).
    #[arg(
        id = "ingest-in-flight",
        long = "ingest-in-flight",
        default_value_t = 32
    )]
    pub in_flight: usize,
    /// Order of the rows in the ceiling's files.
    #[arg(
        id = "ingest-ceiling-order",
        long = "ingest-ceiling-order",
        value_enum,
        default_value_t = CeilingOrder::Key
    )]
    pub ceiling_order: CeilingOrder,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CeilingOrder {
    /// The tables' sort key, as `SELECT *` reads a merged table: ClickHouse's
    /// best case (it has little left to sort).
    Key,
    /// As the collector received them: by batch, the agents interleaved.
    Arrival,
}

impl CeilingOrder {
    fn sql(self) -> &'static str {
        match self {
            Self::Key => "ORDER BY site, ts",
            Self::Arrival => "ORDER BY seq, agent",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Key => "in the tables' key order (site, ts)",
            Self::Arrival => "in arrival order (by batch, agents interleaved)",
        }
    }
}

const DATABASE: &str = "bench_ingest";
const CEILING_DATABASE: &str = "bench_ceiling";
/// Distinct sites the rows cycle through: the issue's fleet.
const SITES: usize = 30_000;
/// Coprime with `SITES`: visiting `i * STRIDE mod SITES` covers every site once
/// per round in an order that is not sorted by name, as an agent's results are not.
const STRIDE: usize = 7_919;
/// Rounds are a minute apart, as the agent's default interval.
const ROUND_MS: u64 = 60_000;
/// Back-to-back small INSERTs leave ClickHouse merging parts for a while; the
/// ceiling is timed once that is over, so it does not pay for the collector's.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(180);

pub fn run(env: &Env, args: &Args) -> anyhow::Result<Vec<Table>> {
    ensure!(
        args.rows > 0 && args.streams > 0 && args.batch > 0 && args.in_flight > 0,
        "--ingest-rows, --ingest-streams, --ingest-batch and --ingest-in-flight must be positive"
    );
    let clickhouse = ClickHouseServer::start();
    let clickhouse_pid = clickhouse
        .pid()
        .context("the testkit's clickhouse-server has stopped")?;
    let agents: Vec<String> = (0..args.streams)
        .map(|i| format!("bench-ingest-{i}"))
        .collect();
    let pki = env.pki(&agents)?;
    create_ceiling_schema(env, &pki, &clickhouse)?;
    let store = StoreKind::ClickHouse {
        url: clickhouse.http_url(),
        database: DATABASE.into(),
    };
    let collector = Collector::start(env, "ingest-collector", &pki, &store, "")?;
    let batches = generate(args);
    eprintln!("ingest: {} rows generated; sending", args.rows);
    let pids = Pids {
        collector: collector.service.pid(),
        clickhouse: clickhouse_pid,
    };
    let load = run_load(&collector, &pki, &agents, batches, args.in_flight, pids)?;
    collector
        .service
        .stop()
        .context("stopping the ingest collector")?;
    verify(&clickhouse, DATABASE, args.rows)?;
    eprintln!("ingest: collector done; timing the ceiling");
    let ceiling = ceiling(env, &clickhouse, clickhouse_pid, args)?;
    Ok(vec![table(args, &load, &ceiling, &clickhouse)?])
}

/// The ceiling's tables and materialized view, built by the collector's own
/// migrations so they are exactly what the collector writes to.
fn create_ceiling_schema(
    env: &Env,
    pki: &Path,
    clickhouse: &ClickHouseServer,
) -> anyhow::Result<()> {
    let store = StoreKind::ClickHouse {
        url: clickhouse.http_url(),
        database: CEILING_DATABASE.into(),
    };
    // The collector listens only once its migrations are applied.
    Collector::start(env, "ingest-ceiling-schema", pki, &store, "")?
        .service
        .stop()
        .context("stopping the schema collector")?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Rows

/// Each stream's batches, built before the clock starts. Batches go to streams
/// in turn, so every agent carries a share of each round.
fn generate(args: &Args) -> Vec<Vec<PushRequest>> {
    let now_ms = unix_ms();
    // Above any seq an earlier run on the same database could have used.
    let first_seq = now_ms * 1000;
    let rounds = args.rows.div_ceil(SITES) as u64;
    let mut streams: Vec<Vec<PushRequest>> = (0..args.streams).map(|_| Vec::new()).collect();
    for (n, start) in (0..args.rows).step_by(args.batch).enumerate() {
        let end = (start + args.batch).min(args.rows);
        let batches = &mut streams[n % args.streams];
        let records = (start..end).map(|i| record(i, now_ms, rounds)).collect();
        batches.push(PushRequest {
            trace_context: Default::default(),
            // With mTLS the certificate names the agent.
            agent_id: String::new(),
            seq: first_seq + batches.len() as u64,
            records,
        });
    }
    streams
}

/// Row `i`: a site probed in round `i / SITES` (the last round ending now),
/// answering as that site does on the probe part's nginx.
fn record(i: usize, now_ms: u64, rounds: u64) -> Record {
    let index = (i % SITES) * STRIDE % SITES;
    let round = (i / SITES) as u64;
    let site = nginx::site_name(index);
    // A cheap deterministic spread (Knuth's multiplicative hash).
    let spread = (i as u64).wrapping_mul(2_654_435_761) % 1_000;
    let (status, method, location, cross_domain) = match nginx::kind(index) {
        "same" => (
            301,
            ProbeMethod::Head,
            format!("https://www.{site}/"),
            false,
        ),
        "cross" => (
            301,
            ProbeMethod::Head,
            format!("https://brand-new-domain.net/{site}/"),
            true,
        ),
        "error" => (500, ProbeMethod::Head, String::new(), false),
        "nohead" => (200, ProbeMethod::Get, String::new(), false),
        _ => (200, ProbeMethod::Head, String::new(), false),
    };
    let latency_us = 300 + spread * 4;
    let probe = ProbeResult {
        site,
        status,
        error: 0,
        method: method as i32,
        latency_us,
        connect_us: 40 + spread / 10,
        first_byte_us: latency_us - latency_us / 8,
        port: 8080,
        location,
        cross_domain,
        ts_ms: now_ms - (rounds - 1 - round) * ROUND_MS - spread,
        cert_expiry_ms: 0,
        target: "127.0.0.1:8080".into(),
        ..ProbeResult::default()
    };
    Record {
        kind: Some(Kind::Probe(probe)),
    }
}

// ---------------------------------------------------------------------------
// Load through the collector

/// What the timed load cost.
struct Load {
    rows: u64,
    wall: Duration,
    /// Collector CPU seconds between the first send and the last ack.
    collector_cpu: f64,
    /// ClickHouse server CPU seconds over the same span.
    clickhouse_cpu: f64,
    /// This process's CPU seconds over the same span (it shares the cores).
    generator_cpu: f64,
    /// Collector's VmHWM after the run, KiB.
    collector_hwm_kib: u64,
    /// Largest VmRSS sampled in the first and second half of the run, KiB.
    collector_rss_halves_kib: [u64; 2],
}

fn run_load(
    collector: &Collector,
    pki: &Path,
    agents: &[String],
    batches: Vec<Vec<PushRequest>>,
    in_flight: usize,
    pids: Pids,
) -> anyhow::Result<Load> {
    let endpoints = agents
        .iter()
        .map(|agent| agent_endpoint(collector, pki, agent))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the load generator's runtime")?;
    let sampler = Sampler::start(pids.collector);
    let timed = runtime.block_on(load(endpoints, batches, in_flight, pids));
    let halves = sampler.finish();
    let (timed, end) = timed?;
    Ok(Load {
        collector_hwm_kib: end.hwm_kib,
        collector_rss_halves_kib: halves,
        ..timed
    })
}

/// An agent's mTLS endpoint, built by the agent's own transport code.
fn agent_endpoint(collector: &Collector, pki: &Path, agent: &str) -> anyhow::Result<Endpoint> {
    let cfg = CollectorConnConfig {
        url: collector.grpc_url(),
        tls: Some(TlsFiles::in_dir(pki, &format!("agent-{agent}"))),
        ..Default::default()
    };
    livehead_agent::transport::endpoint(&cfg)
        .with_context(|| format!("collector endpoint for agent {agent}"))
}

/// The processes whose CPU time is measured.
#[derive(Clone, Copy)]
struct Pids {
    collector: u32,
    clickhouse: u32,
}

/// CPU seconds so far of the collector, ClickHouse and this process.
fn cpu_now(pids: Pids) -> anyhow::Result<[f64; 3]> {
    Ok([
        proc::sample(pids.collector)?.cpu_seconds,
        proc::sample(pids.clickhouse)?.cpu_seconds,
        proc::sample(std::process::id())?.cpu_seconds,
    ])
}

/// One agent's open `Push` stream.
struct Stream {
    tx: mpsc::Sender<PushRequest>,
    acks: Streaming<PushResponse>,
}

/// Opens every stream, then times from the first send to the last ack.
/// Returns the figures and the collector's last sample.
async fn load(
    endpoints: Vec<Endpoint>,
    batches: Vec<Vec<PushRequest>>,
    in_flight: usize,
    pids: Pids,
) -> anyhow::Result<(Load, Sample)> {
    let mut streams = Vec::with_capacity(endpoints.len());
    for (i, endpoint) in endpoints.iter().enumerate() {
        let stream = open(endpoint, in_flight)
            .await
            .with_context(|| format!("opening stream {i}"))?;
        streams.push(stream);
    }
    let cpu_start = cpu_now(pids)?;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (stream, batches)) in streams.into_iter().zip(batches).enumerate() {
        tasks.spawn(async move {
            drive(stream, batches, in_flight)
                .await
                .with_context(|| format!("stream {i}"))
        });
    }
    let mut rows = 0;
    while let Some(done) = tasks.join_next().await {
        rows += done.context("a stream task panicked")??;
    }
    let wall = started.elapsed();
    let cpu_end = cpu_now(pids)?;
    let figures = Load {
        rows,
        wall,
        collector_cpu: cpu_end[0] - cpu_start[0],
        clickhouse_cpu: cpu_end[1] - cpu_start[1],
        generator_cpu: cpu_end[2] - cpu_start[2],
        collector_hwm_kib: 0,
        collector_rss_halves_kib: [0; 2],
    };
    Ok((figures, proc::sample(pids.collector)?))
}

async fn open(endpoint: &Endpoint, in_flight: usize) -> anyhow::Result<Stream> {
    let channel = endpoint
        .connect()
        .await
        .context("connecting to the collector")?;
    // As an agent with `collector.compression = "zstd"` sends (agents send
    // uncompressed by default): the collector's costlier case, inflating.
    let mut client = IngestServiceClient::new(channel)
        .send_compressed(CompressionEncoding::Zstd)
        .accept_compressed(CompressionEncoding::Zstd);
    // Never more than `in_flight` queued: sending never waits on the channel.
    let (tx, rx) = mpsc::channel(in_flight);
    let acks = client
        .push(ReceiverStream::new(rx))
        .await
        .context("opening the Push stream")?
        .into_inner();
    Ok(Stream { tx, acks })
}

/// Sends `batches` with at most `in_flight` unacknowledged, checking each ack
/// (they come in order); returns the records accepted.
async fn drive(
    mut stream: Stream,
    batches: Vec<PushRequest>,
    in_flight: usize,
) -> anyhow::Result<u64> {
    let mut unacked: VecDeque<(u64, usize)> = VecDeque::with_capacity(in_flight);
    let mut batches = batches.into_iter();
    let mut accepted = 0;
    loop {
        while unacked.len() < in_flight {
            let Some(batch) = batches.next() else { break };
            unacked.push_back((batch.seq, batch.records.len()));
            if stream.tx.send(batch).await.is_err() {
                return Err(ended(&mut stream.acks).await);
            }
        }
        let Some((seq, records)) = unacked.pop_front() else {
            return Ok(accepted);
        };
        let ack = stream
            .acks
            .message()
            .await
            .with_context(|| format!("waiting for the ack of batch {seq}"))?
            .with_context(|| format!("the collector closed the stream before acking {seq}"))?;
        check_ack(&ack, seq, records)?;
        accepted += u64::from(ack.accepted);
    }
}

/// Why the collector stopped reading: the status its side of the stream ended with.
async fn ended(acks: &mut Streaming<PushResponse>) -> anyhow::Error {
    match acks.message().await {
        Err(status) => anyhow!("the collector ended the stream: {status}"),
        Ok(_) => anyhow!("the collector stopped reading the stream"),
    }
}

fn check_ack(ack: &PushResponse, seq: u64, records: usize) -> anyhow::Result<()> {
    ensure!(
        ack.seq == seq,
        "ack for batch {} while {seq} was the oldest unacknowledged",
        ack.seq
    );
    let first = ack
        .rejected
        .first()
        .map(|r| format!("{}: {}", r.field, r.reason));
    ensure!(
        !ack.duplicate && ack.rejected.is_empty() && ack.accepted as usize == records,
        "batch {seq} not accepted whole: {} of {records} accepted, {} rejected (first: {first:?}), \
         duplicate: {}",
        ack.accepted,
        ack.rejected.len(),
        ack.duplicate
    );
    Ok(())
}

/// Samples a process's resident set every 100 ms from a thread. VmHWM gives
/// the peak; the samples tell whether memory kept growing to the end.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<u64>>,
}

impl Sampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut rss_kib = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                // A failed read means the process is gone; the load then fails loudly.
                if let Ok(sample) = proc::sample(pid) {
                    rss_kib.push(sample.rss_kib);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            rss_kib
        });
        Self { stop, thread }
    }

    /// The largest resident set sampled in the first and in the second half
    /// of the run, KiB.
    fn finish(self) -> [u64; 2] {
        self.stop.store(true, Ordering::Relaxed);
        let rss_kib = self.thread.join().unwrap_or_default();
        let (first, second) = rss_kib.split_at(rss_kib.len() / 2);
        let max = |half: &[u64]| half.iter().copied().max().unwrap_or(0);
        [max(first), max(second)]
    }
}

// ---------------------------------------------------------------------------
// ClickHouse: checks and the ceiling

/// `health_history` holds exactly the rows sent, and the batch markers count them.
fn verify(clickhouse: &ClickHouseServer, database: &str, rows: usize) -> anyhow::Result<()> {
    for (what, sql) in [
        (
            "rows in health_history",
            format!("SELECT count() FROM {database}.health_history"),
        ),
        (
            "rows counted by the batch markers",
            format!("SELECT sum(records) FROM {database}.ingest_batches"),
        ),
    ] {
        let found: usize = query(clickhouse, &sql)?
            .trim()
            .parse()
            .with_context(|| format!("{what} in {database}"))?;
        ensure!(found == rows, "{found} {what} in {database}, {rows} sent");
    }
    Ok(())
}

/// One timed `clickhouse-client` INSERT from a file.
#[derive(Debug, Clone, Copy)]
struct Insert {
    wall: Duration,
    client: Usage,
    server_cpu: f64,
}

impl Insert {
    fn and(self, other: Self) -> Self {
        Self {
            wall: self.wall + other.wall,
            client: Usage {
                wall: self.client.wall + other.client.wall,
                cpu_seconds: self.client.cpu_seconds + other.client.cpu_seconds,
                max_rss_kib: self.client.max_rss_kib.max(other.client.max_rss_kib),
            },
            server_cpu: self.server_cpu + other.server_cpu,
        }
    }
}

/// The same server's ceiling, timed on the same rows.
struct Ceiling {
    history: Insert,
    last: Insert,
    /// What starting `clickhouse-client` costs, included in each insert's wall time.
    client_start: Duration,
}

/// Wall time of a trivial query: the client start-up in each timed insert.
fn client_start(clickhouse: &ClickHouseServer) -> anyhow::Result<Duration> {
    let started = Instant::now();
    query(clickhouse, "SELECT 1")?;
    Ok(started.elapsed())
}

fn ceiling(
    env: &Env,
    clickhouse: &ClickHouseServer,
    server_pid: u32,
    args: &Args,
) -> anyhow::Result<Ceiling> {
    let history_file = env.path("ingest-history.native");
    let last_file = env.path("ingest-last.native");
    let order = args.ceiling_order.sql();
    export(
        clickhouse,
        &format!("SELECT * FROM {DATABASE}.health_history {order} FORMAT Native"),
        &history_file,
    )?;
    let columns = last_columns(clickhouse)?;
    export(
        clickhouse,
        &format!("SELECT {columns} FROM {DATABASE}.health_history {order} FORMAT Native"),
        &last_file,
    )?;
    settle(clickhouse)?;
    let timed = |table: &str, file: &Path| {
        let log = env.path(&format!("ingest-ceiling-{table}.log"));
        insert(clickhouse, server_pid, table, file, &log)
    };
    let history = timed("health_history", &history_file)?;
    let last = timed("health_last", &last_file)?;
    verify(clickhouse, CEILING_DATABASE, args.rows)?;
    Ok(Ceiling {
        history,
        last,
        client_start: client_start(clickhouse)?,
    })
}

/// `health_last`'s columns in its order, quoted (`cross` is a keyword).
fn last_columns(clickhouse: &ClickHouseServer) -> anyhow::Result<String> {
    let described = query(
        clickhouse,
        &format!("DESCRIBE TABLE {CEILING_DATABASE}.health_last"),
    )?;
    let columns: Vec<String> = described
        .lines()
        .filter_map(|line| line.split('\t').next())
        .filter(|name| !name.is_empty())
        .map(|name| format!("`{name}`"))
        .collect();
    ensure!(!columns.is_empty(), "DESCRIBE health_last answered nothing");
    Ok(columns.join(", "))
}

fn export(clickhouse: &ClickHouseServer, sql: &str, path: &Path) -> anyhow::Result<()> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let output = client(clickhouse)
        .arg("--query")
        .arg(sql)
        .stdin(Stdio::null())
        .stdout(file)
        .output()
        .context("running clickhouse-client")?;
    ensure!(
        output.status.success(),
        "clickhouse-client failed ({}) exporting {sql:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// Times `clickhouse-client` inserting `path` into the ceiling's `table`,
/// with the client's usage (GNU time) and the server's CPU time.
fn insert(
    clickhouse: &ClickHouseServer,
    server_pid: u32,
    table: &str,
    path: &Path,
    log: &Path,
) -> anyhow::Result<Insert> {
    let sql = format!("INSERT INTO {CEILING_DATABASE}.{table} FORMAT Native");
    // Through sh for the redirection: `measure` gives the child no stdin.
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(r#"exec "$0" --host 127.0.0.1 --port "$1" --query "$2" < "$3""#)
        .arg(client_binary())
        .arg(clickhouse.tcp_port().to_string())
        .arg(&sql)
        .arg(path);
    let server_before = proc::sample(server_pid)?.cpu_seconds;
    let started = Instant::now();
    let (client, status) = proc::measure(&mut command, log)?;
    let wall = started.elapsed();
    let server_cpu = proc::sample(server_pid)?.cpu_seconds - server_before;
    ensure!(
        status.success(),
        "clickhouse-client failed ({status}) for {sql:?}; see {}",
        log.display()
    );
    Ok(Insert {
        wall,
        client,
        server_cpu,
    })
}

/// Waits until the server has no merge running (or `SETTLE_TIMEOUT`).
fn settle(clickhouse: &ClickHouseServer) -> anyhow::Result<()> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while Instant::now() < deadline {
        let merges = query(clickhouse, "SELECT count() FROM system.merges")?;
        if merges.trim() == "0" {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "ingest: ClickHouse still merging after {SETTLE_TIMEOUT:?}; timing the ceiling anyway"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Report

fn table(
    args: &Args,
    load: &Load,
    ceiling: &Ceiling,
    clickhouse: &ClickHouseServer,
) -> anyhow::Result<Table> {
    let rows = load.rows as f64;
    let per_million = |cpu: f64| num(cpu * 1e6 / rows);
    let rate = |wall: Duration| rows / wall.as_secs_f64();
    let both = ceiling.history.and(ceiling.last);
    let ceiling_rate = rate(both.wall);
    let share = |wall: Duration| format!("{:.0}%", 100.0 * rate(wall) / ceiling_rate);
    let mut table = Table::new(
        "Ingest: agents' gRPC streams through the collector into ClickHouse vs \
         clickhouse-client (same server, same rows)",
        &[
            "writer",
            "rows",
            "wall (s)",
            "rows/s",
            "% of ceiling",
            "writer CPU-s per 1M rows",
            "ClickHouse CPU-s per 1M rows",
            "writer peak RSS (MiB)",
        ],
    );
    table.row(vec![
        format!("livehead collector ({} mTLS streams)", args.streams),
        load.rows.to_string(),
        num(load.wall.as_secs_f64()),
        num(rate(load.wall)),
        format!("**{}**", share(load.wall)),
        per_million(load.collector_cpu),
        per_million(load.clickhouse_cpu),
        num(load.collector_hwm_kib as f64 / 1024.0),
    ]);
    for (writer, insert) in [
        ("clickhouse-client, both tables: **the ceiling**", both),
        ("clickhouse-client, health_history alone", ceiling.history),
    ] {
        table.row(vec![
            writer.into(),
            load.rows.to_string(),
            num(insert.wall.as_secs_f64()),
            num(rate(insert.wall)),
            share(insert.wall),
            per_million(insert.client.cpu_seconds),
            per_million(insert.server_cpu),
            num(insert.client.max_rss_mib()),
        ]);
    }
    notes(&mut table, args, load, ceiling, clickhouse)?;
    Ok(table)
}

fn notes(
    table: &mut Table,
    args: &Args,
    load: &Load,
    ceiling: &Ceiling,
    clickhouse: &ClickHouseServer,
) -> anyhow::Result<()> {
    let version = query(clickhouse, "SELECT version()")?;
    table.note(
        "Target: the collector sustains at least 70% of the ceiling measured in the same run, \
         with bounded memory.",
    );
    table.note(format!(
        "Collector: {} agents' bidi streams (mTLS, one certificate each, zstd as an agent \
         set to compress sends), batches of {} records, at most {} unacknowledged per stream; every ack checked \
         (all records accepted) and health_history's `count()` verified. Wall time from the \
         first send to the last ack; rows generated beforehand (30,000 sites, the probe part's \
         status mix, rounds a minute apart). Collector CPU and peak RSS (VmHWM) from /proc; \
         sampled every 100 ms, its RSS peaked at {} MiB in the first half of the run and {} MiB \
         in the second. The load generator used {} CPU-s of the \
         same cores meanwhile.",
        args.streams,
        args.batch,
        args.in_flight,
        num(load.collector_rss_halves_kib[0] as f64 / 1024.0),
        num(load.collector_rss_halves_kib[1] as f64 / 1024.0),
        num(load.generator_cpu),
    ));
    table.note(format!(
        "Ceiling: the collector's rows exported from health_history in Native {} \
         and inserted by clickhouse-client into an identical schema (built by the collector's \
         migrations, materialized view included), health_history then health_last, once the \
         collector's merges were over; rows ÷ both times, since the collector writes both \
         tables. ClickHouse {} CPU is the server's during each run (merges that run later are \
         not counted, in either case); the client's CPU and RSS from GNU time. Each client run \
         includes its start-up ({} s for a `SELECT 1`).",
        args.ceiling_order.describe(),
        version.trim(),
        num(ceiling.client_start.as_secs_f64()),
    ));
    Ok(())
}
