//! Part 1: one full probe round of N sites on a local nginx, by the old
//! sequential bash+curl script and by `livehead agent --once`, side by side.

use std::path::Path;
use std::process::Command;

use crate::livehead::{Collector, Env, StoreKind, agent_command};
use crate::nginx::{self, Nginx};
use crate::proc::{Usage, measure};
use crate::table::{Table, num, ratio};

// Every part's options are named `Args`: no group, or their names clash.
#[derive(Debug, clap::Args)]
#[group(skip)]
pub struct Args {
    /// Site counts probed (one round each).
    #[arg(long, value_delimiter = ',', default_value = "200,2000,30000")]
    pub sizes: Vec<usize>,
    /// Largest site count the old script is run on (it takes ~6 min for 30,000).
    #[arg(long, default_value_t = 30_000)]
    pub script_max: usize,
    /// Agent rounds per size; the median (by wall time) is reported.
    #[arg(long, default_value_t = 3)]
    pub agent_runs: usize,
    /// Probes in flight at once for the agent.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
}

const AGENT: &str = "bench-probe";

struct Run {
    usage: Usage,
    note: String,
}

pub fn run(env: &Env, args: &Args) -> anyhow::Result<Vec<Table>> {
    let most = args.sizes.iter().copied().max().unwrap_or(0);
    let nginx = Nginx::start(&env.path("nginx"), most)?;
    let pki = env.pki(&[AGENT.to_owned()])?;
    // The script posts every result in one request: let the collector take it.
    let collector = Collector::start(
        env,
        "probe-collector",
        &pki,
        &StoreKind::Sqlite(env.path("probe.db")),
        "[limits]\nmax_batch_records = 100000\n[api]\nmax_push_bytes = 67108864\n",
    )?;
    let mut table = Table::new(
        "Probe round: old script vs livehead agent (local nginx, realistic mix)",
        &[
            "sites",
            "tool",
            "round wall (s)",
            "probes/s",
            "CPU-s per 1,000 probes",
            "peak RSS (MiB)",
            "note",
        ],
    );
    for &sites in &args.sizes {
        let root = nginx::web_root(&env.dir, sites)?;
        let agent = agent_round(env, &pki, &collector, &nginx, &root, args, Round::Head)?;
        check_stored(&collector, sites)?;
        let kept = agent_round(env, &pki, &collector, &nginx, &root, args, Round::KeepAlive)?;
        check_stored(&collector, sites)?;
        let content = agent_round(
            env,
            &pki,
            &collector,
            &nginx,
            &root,
            args,
            Round::Content(&content_config(env)?),
        )?;
        let script = (sites <= args.script_max)
            .then(|| script_round(env, &collector, &nginx, &root))
            .transpose()?;
        if let Some(script) = &script {
            table.row(cells(sites, "live_head.sh (bash+curl)", script));
        }
        table.row(cells(
            sites,
            "livehead agent --once --no-content (HEAD)",
            &agent,
        ));
        table.row(cells(
            sites,
            "livehead agent --once --no-content --keep-alive (HEAD, kept connections)",
            &kept,
        ));
        table.row(cells(
            sites,
            "livehead agent --once, content check of every site",
            &content,
        ));
        table.row(vec![
            sites.to_string(),
            "**keep-alive ÷ HEAD**".into(),
            ratio(
                kept.usage.wall.as_secs_f64(),
                agent.usage.wall.as_secs_f64(),
            ),
            String::new(),
            ratio(kept.usage.cpu_seconds, agent.usage.cpu_seconds),
            ratio(kept.usage.max_rss_mib(), agent.usage.max_rss_mib()),
            String::new(),
        ]);
        table.row(vec![
            sites.to_string(),
            "**content ÷ HEAD**".into(),
            ratio(
                content.usage.wall.as_secs_f64(),
                agent.usage.wall.as_secs_f64(),
            ),
            String::new(),
            ratio(content.usage.cpu_seconds, agent.usage.cpu_seconds),
            ratio(content.usage.max_rss_mib(), agent.usage.max_rss_mib()),
            String::new(),
        ]);
        if let Some(script) = &script {
            let per_probe = |u: &Usage| u.cpu_seconds / sites as f64;
            table.row(vec![
                sites.to_string(),
                "**script ÷ agent**".into(),
                ratio(
                    script.usage.wall.as_secs_f64(),
                    agent.usage.wall.as_secs_f64(),
                ),
                String::new(),
                ratio(per_probe(&script.usage), per_probe(&agent.usage)),
                ratio(script.usage.max_rss_mib(), agent.usage.max_rss_mib()),
                String::new(),
            ]);
        }
        eprintln!("probe: {sites} sites done");
    }
    table.note(
        "Targets: a 30,000-site round under 5 s; at least 100× less CPU per probe than \
         the script, and less than blackbox_exporter's ~0.6 CPU-ms per probe (figure \
         quoted by the issue, not measured here).",
    );
    table.note(format!(
        "Agent: mTLS to a collector on SQLite, concurrency {}, median of {} rounds. CPU and \
         peak RSS from GNU time (the script's CPU includes its curl, awk and date \
         processes; its RSS is the largest single process).",
        args.concurrency, args.agent_runs
    ));
    table.note(
        "Keep-alive row: the HEAD round with `--keep-alive` (`probe.keep_alive`): the sites \
         share HTTP/1.1 connections to nginx (at most one per probe in flight) instead of \
         one connect and close each; nginx closes a connection after a 500 and after 1,000 \
         requests (`keepalive_requests`), so some probes still connect.",
    );
    table.note(
        "Content check row: the same round with `[content] every_rounds = 1`, so every \
         site gets one plain GET whose body (nginx's few-byte pages) is read and held \
         against the default assertions, instead of HEAD; by default only one round in \
         `every_rounds` (4) does so for a given site.",
    );
    Ok(vec![table])
}

/// An agent config that content-checks every site in every round.
fn content_config(env: &Env) -> anyhow::Result<std::path::PathBuf> {
    let path = env.path("agent-content.toml");
    std::fs::write(&path, "[content]\nevery_rounds = 1\n")?;
    Ok(path)
}

/// GNU time counts CPU in 10 ms steps: below one step, say so.
fn cpu_per_thousand(cpu_seconds: f64, sites: usize) -> String {
    if cpu_seconds < 0.01 {
        return format!("< {}", num(10.0 / sites as f64));
    }
    num(cpu_seconds * 1000.0 / sites as f64)
}

fn cells(sites: usize, tool: &str, run: &Run) -> Vec<String> {
    let wall = run.usage.wall.as_secs_f64();
    vec![
        sites.to_string(),
        tool.into(),
        num(wall),
        num(sites as f64 / wall),
        cpu_per_thousand(run.usage.cpu_seconds, sites),
        num(run.usage.max_rss_mib()),
        run.note.clone(),
    ]
}

fn agent_round(
    env: &Env,
    pki: &Path,
    collector: &Collector,
    nginx: &Nginx,
    root: &Path,
    args: &Args,
    round: Round<'_>,
) -> anyhow::Result<Run> {
    let mut runs = Vec::new();
    for i in 0..args.agent_runs.max(1) {
        let mut command = agent_command(env, pki, AGENT, collector);
        match round {
            Round::Content(config) => command.arg("--config").arg(config),
            // The HEAD rounds the ratios compare with: by default a quarter of
            // the sites would get their content check in them.
            Round::Head => command.arg("--no-content"),
            Round::KeepAlive => command.arg("--no-content").arg("--keep-alive"),
        };
        command
            .arg("--web-root")
            .arg(root)
            .arg("--target")
            .arg(nginx.addr.to_string())
            .arg("--concurrency")
            .arg(args.concurrency.to_string())
            .arg("--once");
        let kind = match round {
            Round::Head => "",
            Round::KeepAlive => "keep-alive-",
            Round::Content(_) => "content-",
        };
        let log = env.path(&format!("agent-{kind}{}-{i}.log", root_size(root)));
        let (usage, status) = measure(&mut command, &log)?;
        anyhow::ensure!(
            status.success(),
            "livehead agent --once failed ({status}); see {}",
            log.display()
        );
        runs.push(usage);
    }
    runs.sort_by_key(|u| u.wall);
    Ok(Run {
        usage: runs[runs.len() / 2],
        note: String::new(),
    })
}

/// Which agent round: HEAD probes on a new connection each, the same on
/// kept-alive connections, or a content check of every site (its config file).
#[derive(Clone, Copy)]
enum Round<'a> {
    Head,
    KeepAlive,
    Content(&'a Path),
}

fn root_size(root: &Path) -> String {
    root.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn script_round(
    env: &Env,
    collector: &Collector,
    nginx: &Nginx,
    root: &Path,
) -> anyhow::Result<Run> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("live_head.sh");
    let mut command = Command::new("bash");
    command
        .arg(&script)
        .env("ROOT", root)
        .env("LOCAL_IP", nginx.addr.ip().to_string())
        .env("PORT", nginx.addr.port().to_string())
        .env("WORKER_URL", format!("http://{}/push", collector.http))
        .env("AUTH_TOKEN", &collector.token);
    let log = env.path(&format!("script-{}.log", root_size(root)));
    let (usage, status) = measure(&mut command, &log)?;
    let note = if status.success() {
        "results posted".to_owned()
    } else {
        // Above ~1,500 sites the final `curl -d "$payload"` exceeds the kernel's
        // 128 KiB limit on one argument: the round is probed, then lost.
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let reason = text
            .lines()
            .find(|l| l.contains("Argument list too long"))
            .map_or_else(
                || format!("exit {status}"),
                |_| "argument list too long".into(),
            );
        format!("**POST failed: {reason}**; round lost")
    };
    Ok(Run { usage, note })
}

/// The agent's round really reached the store: a sample of each kind of site
/// reads back with the status nginx gives it.
fn check_stored(collector: &Collector, sites: usize) -> anyhow::Result<()> {
    for index in [0, 80, 88, 92, 96, sites - 1] {
        if index >= sites {
            continue;
        }
        let site = nginx::site_name(index);
        let url = format!("http://{}/last?site={site}", collector.http);
        let out = Command::new("curl").arg("-sf").arg(&url).output()?;
        let body = String::from_utf8_lossy(&out.stdout);
        let want = match nginx::kind(index) {
            "ok" | "nohead" => "\"s\":200",
            "same" | "cross" => "\"s\":301",
            _ => "\"s\":500",
        };
        anyhow::ensure!(
            body.contains(want),
            "after the agent's round, /last?site={site} answered {body:?}, expected {want}"
        );
    }
    Ok(())
}
