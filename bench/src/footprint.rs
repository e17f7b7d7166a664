//! Part: footprint. The long-running agent probing a node's sites, sampled from
//! `/proc` for resident memory and CPU, next to Prometheus' node_exporter
//! (Debian's `prometheus-node-exporter`) serving a scrape every 10 s: the
//! daemon a node already runs, which the agent should not outweigh.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use livehead_testkit::free_port;

use crate::livehead::{Collector, Env, StoreKind, agent_command};
use crate::nginx::{self, Nginx};
use crate::proc::{Sample, Service, sample};
use crate::table::{Table, num};

// Every part's options are named `Args`: no group, or their names clash.
#[derive(Debug, clap::Args)]
#[group(skip)]
pub struct Args {
    /// Sites the agent probes each round.
    #[arg(
        id = "footprint-sites",
        long = "footprint-sites",
        default_value_t = 2000
    )]
    pub sites: usize,
    /// How long both processes are watched (sampled every second).
    #[arg(
        id = "footprint-duration",
        long = "footprint-duration",
        default_value = "120s",
        value_parser = humantime::parse_duration
    )]
    pub duration: Duration,
    /// The agent's round interval.
    #[arg(
        id = "footprint-interval",
        long = "footprint-interval",
        default_value = "30s",
        value_parser = humantime::parse_duration
    )]
    pub interval: Duration,
    /// Time between two scrapes of each `/metrics` endpoint.
    #[arg(
        id = "footprint-scrape-every",
        long = "footprint-scrape-every",
        default_value = "10s",
        value_parser = humantime::parse_duration
    )]
    pub scrape_every: Duration,
    /// Extra environment for the agent, KEY=VALUE, repeatable (to try allocator
    /// or runtime settings: MALLOC_ARENA_MAX=2, TOKIO_WORKER_THREADS=1).
    #[arg(
        id = "footprint-agent-env",
        long = "footprint-agent-env",
        value_parser = parse_env
    )]
    pub agent_env: Vec<(String, String)>,
    /// The binary the agent runs from (default: the `livehead` under test, which
    /// still runs the collector), to compare builds.
    #[arg(id = "footprint-agent-bin", long = "footprint-agent-bin")]
    pub agent_bin: Option<PathBuf>,
    /// Agents to watch side by side in the same run, instead of the one above:
    /// `LABEL=BINARY[,KEY=VALUE...]` (an empty BINARY is the `livehead` under
    /// test; KEY=VALUE is that agent's environment), repeatable. The machine
    /// is noisy: builds and settings compare fairly only within one run.
    #[arg(
        id = "footprint-variant",
        long = "footprint-variant",
        value_parser = parse_variant
    )]
    pub variants: Vec<Variant>,
}

/// One agent of a side-by-side run.
#[derive(Debug, Clone)]
pub struct Variant {
    pub label: String,
    pub bin: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    /// Probes the sites; false: an empty site list, the agent only samples.
    pub probing: bool,
}

fn parse_variant(text: &str) -> Result<Variant, String> {
    let (label, rest) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not LABEL=BINARY[,KEY=VALUE...]"))?;
    let mut parts = rest.split(',');
    let bin = parts.next().filter(|b| !b.is_empty()).map(PathBuf::from);
    let env = parts.map(parse_env).collect::<Result<_, _>>()?;
    Ok(Variant {
        label: label.to_owned(),
        bin,
        env,
        probing: true,
    })
}

impl Args {
    /// The agents to watch: the variants; else the single agent of
    /// `--footprint-agent-bin` and `--footprint-agent-env`; else the
    /// `livehead` under test and, when `bench/run` built it next door, the
    /// agent-only binary that nodes run.
    fn agents(&self, under_test: &Path) -> Vec<Variant> {
        if !self.variants.is_empty() {
            return self.variants.clone();
        }
        let full = Variant {
            label: "livehead agent".into(),
            bin: self.agent_bin.clone(),
            env: self.agent_env.clone(),
            probing: true,
        };
        let agent_only = under_test
            .parent()
            .and_then(Path::parent)
            .map(|target| target.join(AGENT_ONLY));
        match agent_only {
            Some(bin) if self.agent_bin.is_none() && bin.exists() => {
                let mut probing_only = self.agent_env.clone();
                probing_only.push(("LIVEHEAD_NO_SAMPLE".into(), "true".into()));
                vec![
                    Variant {
                        label: "livehead agent (full binary)".into(),
                        ..full
                    },
                    Variant {
                        label: "livehead agent (agent-only build)".into(),
                        bin: Some(bin.clone()),
                        env: self.agent_env.clone(),
                        probing: true,
                    },
                    // The same without sampling: what sampling adds.
                    Variant {
                        label: PROBING_ONLY.into(),
                        bin: Some(bin.clone()),
                        env: probing_only,
                        probing: true,
                    },
                    // The same without sites: the sampler's own CPU.
                    Variant {
                        label: SAMPLING_ONLY.into(),
                        bin: Some(bin),
                        env: self.agent_env.clone(),
                        probing: false,
                    },
                ]
            }
            _ => vec![full],
        }
    }
}

/// The agent-only build with sampling off.
const PROBING_ONLY: &str = "livehead agent (agent-only build, sampling off)";
/// The agent-only build with no site to probe.
const SAMPLING_ONLY: &str = "livehead agent (agent-only build, no sites)";

/// Where `cargo build --profile release-agent --no-default-features` puts
/// the agent-only binary, relative to the target directory.
const AGENT_ONLY: &str = "release-agent/livehead";

fn parse_env(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))
}

const AGENT: &str = "bench-footprint";
const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";
const MIB: f64 = 1024.0;
/// The target for the agent, probing and sampling the host.
const TARGET_MIB: f64 = 12.0;

pub fn run(env: &Env, args: &Args) -> anyhow::Result<Vec<Table>> {
    let nginx = Nginx::start(&env.path("nginx-footprint"), args.sites)?;
    let root = nginx::web_root(&env.dir, args.sites)?;
    let variants = args.agents(&env.bin);
    let names: Vec<String> = (0..variants.len())
        .map(|i| format!("{AGENT}-{i}"))
        .collect();
    let pki = env.pki(&names)?;
    let collector = Collector::start(
        env,
        "footprint-collector",
        &pki,
        &StoreKind::Sqlite(env.path("footprint.db")),
        "",
    )?;
    let mut exporter = NodeExporter::start(env)?;
    let mut agents = Vec::new();
    for (i, variant) in variants.iter().enumerate() {
        // Each agent maps its own copy, so no agent profits from pages
        // another one brought into the page cache.
        let agent_env = Env {
            bin: cold_copy(
                variant.bin.as_deref().unwrap_or(&env.bin),
                &env.path(&format!("livehead-agent-{i}")),
            )?,
            dir: env.dir.clone(),
        };
        let log = env.path(&format!("footprint-agent-{i}.log"));
        let site = Sites {
            nginx: &nginx,
            root: &root,
        };
        agents.push(Agent::start(
            &agent_env, &pki, &names[i], &collector, site, args, variant, &log,
        )?);
    }
    let observed = observe(&mut agents, &mut exporter, args)?;
    let mut works = Vec::new();
    for (i, agent) in agents.iter().enumerate() {
        let work = AgentWork::parse(&scrape(agent.metrics)?);
        anyhow::ensure!(
            !variants[i].probing || (work.probes > 0.0 && work.acked > 0.0),
            "the agent {:?} probed {} sites and got {} batches acknowledged; see {}",
            variants[i].label,
            work.probes,
            work.acked,
            env.path(&format!("footprint-agent-{i}.log")).display()
        );
        works.push(work);
    }
    eprintln!("footprint: done");
    Ok(vec![table(
        args,
        &variants,
        &observed,
        &works,
        &exporter.version,
    )])
}

/// A copy of `bin` with none of its pages cached, so the agent's RSS does not
/// depend on what the collector (same binary) has read: fault-around maps the
/// cached neighbours of every code page touched. On a node, the agent runs alone.
fn cold_copy(bin: &Path, copy: &Path) -> anyhow::Result<PathBuf> {
    std::fs::copy(bin, copy)
        .with_context(|| format!("copying {} to {}", bin.display(), copy.display()))?;
    std::fs::File::open(copy)?
        .sync_all()
        .with_context(|| format!("syncing {}", copy.display()))?;
    // GNU dd's nocache with no data drops the whole file from the page cache.
    let status = Command::new("dd")
        .arg(format!("if={}", copy.display()))
        .args(["iflag=nocache", "count=0", "status=none"])
        .status()
        .context("running dd")?;
    anyhow::ensure!(
        status.success(),
        "dd iflag=nocache on {}: {status}",
        copy.display()
    );
    Ok(copy.to_owned())
}

/// A process watched over the run: every sample's RSS, the first and last sample.
struct Watch {
    pid: u32,
    first: Sample,
    first_split: Split,
    last: Sample,
    started: Instant,
    rss_kib: Vec<u64>,
}

impl Watch {
    fn new(pid: u32) -> anyhow::Result<Self> {
        let first = sample(pid)?;
        Ok(Self {
            pid,
            first,
            first_split: Split::read(pid)?,
            last: first,
            started: Instant::now(),
            rss_kib: vec![first.rss_kib],
        })
    }

    fn tick(&mut self) -> anyhow::Result<()> {
        self.last = sample(self.pid)?;
        self.rss_kib.push(self.last.rss_kib);
        Ok(())
    }

    fn finish(mut self) -> anyhow::Result<Figures> {
        self.rss_kib.sort_unstable();
        let wall = self.started.elapsed().as_secs_f64();
        Ok(Figures {
            start_mib: self.first.rss_kib as f64 / MIB,
            median_mib: self.rss_kib[self.rss_kib.len() / 2] as f64 / MIB,
            peak_mib: self.last.hwm_kib as f64 / MIB,
            start_split: self.first_split,
            end_split: Split::read(self.pid)?,
            cpu_percent: (self.last.cpu_seconds - self.first.cpu_seconds) * 100.0 / wall,
        })
    }
}

/// Where the resident memory is: heap and stacks (anonymous) vs mapped code
/// and files, which shrink with the binary rather than with the agent's data.
#[derive(Clone, Copy)]
struct Split {
    anon_mib: f64,
    file_mib: f64,
    threads: f64,
}

impl Split {
    fn read(pid: u32) -> anyhow::Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status"))?;
        let field = |key: &str| -> f64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0.0)
        };
        Ok(Self {
            anon_mib: field("RssAnon:") / MIB,
            file_mib: field("RssFile:") / MIB,
            threads: field("Threads:"),
        })
    }

    fn cell(&self) -> String {
        format!("{} + {}", num(self.anon_mib), num(self.file_mib))
    }
}

struct Figures {
    start_mib: f64,
    median_mib: f64,
    peak_mib: f64,
    start_split: Split,
    end_split: Split,
    cpu_percent: f64,
}

struct Observed {
    agents: Vec<Figures>,
    exporter: Figures,
    scrapes: usize,
    scrape_kib: f64,
}

/// Samples both processes every second for the run, each `/metrics` scraped
/// every `scrape_every` from the start, as a Prometheus would.
fn observe(
    agents: &mut [Agent],
    exporter: &mut NodeExporter,
    args: &Args,
) -> anyhow::Result<Observed> {
    // Start figures are taken before anything is scraped: node_exporter's idle size.
    let mut agent_watches = agents
        .iter()
        .map(|a| Watch::new(a.service.pid()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut exporter_watch = Watch::new(exporter.service.pid())?;
    let started = Instant::now();
    let scrape_every = args.scrape_every.as_secs().max(1);
    let (mut scrapes, mut scraped_bytes) = (0, 0);
    for second in 0..args.duration.as_secs().max(1) {
        if second % scrape_every == 0 {
            scraped_bytes += scrape(exporter.addr)?.len();
            scrapes += 1;
            for agent in agents.iter() {
                scrape(agent.metrics)?;
            }
        }
        let next = started + Duration::from_secs(second + 1);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        exporter.service.check_running()?;
        exporter_watch.tick()?;
        for (agent, watch) in agents.iter_mut().zip(&mut agent_watches) {
            agent.service.check_running()?;
            watch.tick()?;
        }
    }
    Ok(Observed {
        agents: agent_watches
            .into_iter()
            .map(Watch::finish)
            .collect::<anyhow::Result<_>>()?,
        exporter: exporter_watch.finish()?,
        scrapes,
        scrape_kib: scraped_bytes as f64 / 1024.0 / scrapes.max(1) as f64,
    })
}

/// `/metrics` as Prometheus fetches it (it asks for gzip, which costs the
/// server CPU); the decompressed text.
fn scrape(addr: SocketAddr) -> anyhow::Result<String> {
    let url = format!("http://{addr}/metrics");
    let out = Command::new("curl")
        .args(["-sf", "--compressed", "--max-time", "10"])
        .arg(&url)
        .output()
        .context("running curl")?;
    anyhow::ensure!(out.status.success(), "curl {url}: {}", out.status);
    String::from_utf8(out.stdout).with_context(|| format!("{url} answered non-UTF-8"))
}

struct Agent {
    service: Service,
    metrics: SocketAddr,
}

/// What every agent probes.
#[derive(Clone, Copy)]
struct Sites<'a> {
    nginx: &'a Nginx,
    root: &'a Path,
}

impl Agent {
    #[allow(clippy::too_many_arguments)]
    fn start(
        env: &Env,
        pki: &Path,
        name: &str,
        collector: &Collector,
        sites: Sites<'_>,
        args: &Args,
        variant: &Variant,
        log: &Path,
    ) -> anyhow::Result<Self> {
        let mut command = agent_command(env, pki, name, collector);
        if variant.probing {
            command
                .arg("--web-root")
                .arg(sites.root)
                .arg("--target")
                .arg(sites.nginx.addr.to_string());
        } else {
            let empty = env.path(&format!("{name}-no-sites.txt"));
            std::fs::write(&empty, "")?;
            command.arg("--sites-file").arg(empty);
        }
        command
            .arg("--interval")
            .arg(humantime::format_duration(args.interval).to_string())
            .envs(variant.env.iter().map(|(k, v)| (k, v)));
        let metrics = metrics_listen(&command)?;
        let mut service = Service::spawn(&variant.label, &mut command, log)?;
        service.wait_for_port(metrics)?;
        Ok(Self { service, metrics })
    }
}

/// The `/metrics` address `agent_command` chose (clap refuses the flag twice,
/// so it is read back rather than overridden).
fn metrics_listen(command: &Command) -> anyhow::Result<SocketAddr> {
    let mut args = command.get_args();
    args.find(|a| *a == "--metrics-listen")
        .and_then(|_| args.next())
        .and_then(|a| a.to_str())
        .context("the agent command has no --metrics-listen")?
        .parse()
        .context("the agent's --metrics-listen")
}

struct NodeExporter {
    service: Service,
    addr: SocketAddr,
    version: String,
}

impl NodeExporter {
    /// Debian's node_exporter with its default collectors, on a free port.
    fn start(env: &Env) -> anyhow::Result<Self> {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut command = Command::new(NODE_EXPORTER);
        command.arg(format!("--web.listen-address={addr}"));
        let log = env.path("footprint-node-exporter.log");
        let mut service = Service::spawn("node_exporter", &mut command, &log)
            .context("starting node_exporter (apt-get install prometheus-node-exporter)")?;
        service.wait_for_port(addr)?;
        Ok(Self {
            service,
            addr,
            version: node_exporter_version(),
        })
    }
}

/// "1.5.0", from the first line of `--version` ("node_exporter, version 1.5.0 (...)").
fn node_exporter_version() -> String {
    Command::new(NODE_EXPORTER)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            // Go's flag library prints the version on stderr in older releases.
            let text = [o.stdout, o.stderr].concat();
            let text = String::from_utf8_lossy(&text);
            let (_, rest) = text.split_once("version ")?;
            rest.split_whitespace().next().map(str::to_owned)
        })
        .unwrap_or_else(|| "?".into())
}

/// What the agent did over its life, from its own `/metrics`.
struct AgentWork {
    rounds: f64,
    probes: f64,
    acked: f64,
    sample_ticks: f64,
}

impl AgentWork {
    fn parse(metrics: &str) -> Self {
        Self {
            rounds: metric_sum(metrics, "livehead_agent_rounds_total"),
            probes: metric_sum(metrics, "livehead_agent_probes_total"),
            acked: metric_sum(metrics, "livehead_agent_batches_acked_total"),
            sample_ticks: metric_sum(metrics, "livehead_agent_sample_ticks_total"),
        }
    }
}

/// The sum of every series of `name` (all label sets) in Prometheus text.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(name))
        .filter(|rest| rest.starts_with([' ', '{']))
        .filter_map(|rest| rest.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn table(
    args: &Args,
    variants: &[Variant],
    observed: &Observed,
    works: &[AgentWork],
    exporter_version: &str,
) -> Table {
    let mut table = Table::new(
        "Footprint: livehead agent next to node_exporter",
        &[
            "process",
            "doing",
            "RSS start (MiB)",
            "RSS median (MiB)",
            "RSS peak (MiB)",
            "anon + files (MiB), start → end",
            "threads",
            "CPU %",
        ],
    );
    for ((variant, figures), work) in variants.iter().zip(&observed.agents).zip(works) {
        let agent_doing = if variant.probing {
            format!(
                "probing {} sites every {} (spread over half of it); rounds done: {}, \
                 probes: {}; samples of the host: {}",
                args.sites,
                humantime::format_duration(args.interval),
                work.rounds,
                work.probes,
                work.sample_ticks
            )
        } else {
            format!(
                "no site to probe; samples of the host: {}",
                work.sample_ticks
            )
        };
        table.row(cells(&variant.label, &agent_doing, figures));
    }
    let exporter_doing = format!(
        "serving a scrape every {}; scrapes: {} of {} KiB",
        humantime::format_duration(args.scrape_every),
        observed.scrapes,
        num(observed.scrape_kib)
    );
    let exporter_name = format!("prometheus-node-exporter {exporter_version}");
    table.row(cells(&exporter_name, &exporter_doing, &observed.exporter));
    for note in notes(args, variants, observed, works) {
        table.note(note);
    }
    table
}

/// The sampler's CPU per sample (the agent-only build sampling, minus the
/// same build with sampling off, over the samples taken) next to
/// node_exporter's per scrape.
fn sampler_cost(
    args: &Args,
    variants: &[Variant],
    observed: &Observed,
    works: &[AgentWork],
) -> String {
    let cpu_ms = |f: &Figures| f.cpu_percent / 100.0 * args.duration.as_secs_f64() * 1000.0;
    let exporter = cpu_ms(&observed.exporter) / observed.scrapes.max(1) as f64;
    let index = |label: &str| variants.iter().position(|v| v.label == label);
    let sampling = index("livehead agent (agent-only build)");
    let (Some(on), Some(off)) = (sampling, index(PROBING_ONLY)) else {
        return format!(
            "Every agent samples the host every 10 s (CPU, memory, load, PSI, disks, \
             filesystems, network). node_exporter: {} CPU-ms per scrape. The sampler's own \
             cost needs the agent-only build next to the full binary (bench/run builds it).",
            num(exporter)
        );
    };
    let alone = index(SAMPLING_ONLY);
    let per_tick = |i: usize| cpu_ms(&observed.agents[i]) / works[i].sample_ticks.max(1.0);
    let added_mib = observed.agents[on].peak_mib - observed.agents[off].peak_mib;
    let own = alone.map_or_else(String::new, |i| {
        format!(
            " The sampler alone (the same build with no site to probe, its /metrics scraped \
             like the others: an upper bound) spends {} CPU-ms per \
             sample, over {} samples, against node_exporter's {} CPU-ms per scrape.",
            num(per_tick(i)),
            works[i].sample_ticks,
            num(exporter)
        )
    });
    format!(
        "Sampling the host (CPU, memory, load, PSI, disks, filesystems, network every 10 s) \
         adds {} MiB to the agent-only build's peak (with sampling minus without).{own} CPU \
         of a run this short is noisy: compare side by side, not the absolute figures.",
        num(added_mib),
    )
}

fn cells(process: &str, doing: &str, f: &Figures) -> Vec<String> {
    vec![
        process.into(),
        doing.into(),
        num(f.start_mib),
        num(f.median_mib),
        num(f.peak_mib),
        format!("{} → {}", f.start_split.cell(), f.end_split.cell()),
        f.end_split.threads.to_string(),
        num(f.cpu_percent),
    ]
}

fn notes(
    args: &Args,
    variants: &[Variant],
    observed: &Observed,
    works: &[AgentWork],
) -> Vec<String> {
    let verdicts: Vec<String> = variants
        .iter()
        .zip(&observed.agents)
        .map(|(variant, figures)| {
            let peak = figures.peak_mib;
            let verdict = if peak < TARGET_MIB {
                format!("met (peak {} MiB)", num(peak))
            } else {
                format!("**not met** (peak {} MiB)", num(peak))
            };
            if variants.len() == 1 {
                verdict
            } else {
                format!("{}: {verdict}", variant.label)
            }
        })
        .collect();
    let verdict = verdicts.join("; ");
    vec![
        format!(
            "Target: the agent, probing and sampling the host, stays under {TARGET_MIB} MiB \
             resident: {verdict}. The issue quotes node_exporter at about 13.5 MiB idle and \
             about 20 MiB after scrapes."
        ),
        sampler_cost(args, variants, observed, works),
        "anon: heap and thread stacks; files: mapped code of the binary and its shared \
         libraries (clean pages the kernel may drop, but counted in RSS; they shrink with \
         the binary, not with the agent's data)."
            .into(),
        format!(
            "Watched for {} and sampled from /proc every second. RSS start: once both \
             listen, before the first scrape; peak: VmHWM (start-up included); CPU: CPU \
             seconds over the run ÷ wall. Both /metrics endpoints are scraped every {} with \
             gzip, as Prometheus does. The agent sends to a collector (mTLS, SQLite) and \
             probes a local nginx; node_exporter runs its default collectors.{}",
            humantime::format_duration(args.duration),
            humantime::format_duration(args.scrape_every),
            agent_variants(variants),
        ),
    ]
}

/// What differs from the default agent, when asked: each agent's binary and
/// environment.
fn agent_variants(variants: &[Variant]) -> String {
    let mut out = String::new();
    for variant in variants {
        let mut parts = Vec::new();
        if let Some(bin) = &variant.bin {
            parts.push(format!("binary {}", bin.display()));
        }
        if !variant.env.is_empty() {
            let vars: Vec<String> = variant
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            parts.push(format!("environment {}", vars.join(" ")));
        }
        if !parts.is_empty() {
            out.push_str(&format!(" {}: {}.", variant.label, parts.join(", ")));
        }
    }
    out
}
