//! Part: the old worker's read API (`/last`, `/dump_last`) under concurrent
//! load from wrk on loopback, on SQLite and on ClickHouse, side by side.
//!
//! Both collectors get the same sites through `POST /push` (two rounds, so the
//! history holds more than the newest state); every URL is first checked once
//! with curl against a model of what was pushed, then loaded with wrk.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use livehead_testkit::clickhouse::ClickHouseServer;
use serde_json::{Value, json};

use livehead_common::clock::unix_ms;

use crate::clickhouse::query;
use crate::livehead::{Collector, Env, StoreKind};
use crate::nginx;
use crate::table::{Table, num};

// Every part's options are named `Args`: no group, or their names clash.
#[derive(Debug, clap::Args)]
#[group(skip)]
pub struct Args {
    /// Sites stored in each store before the load.
    #[arg(long = "api-sites", default_value_t = 30_000)]
    pub sites: usize,
    /// Length of each wrk run (`10s`, `1m`; whole seconds for wrk).
    #[arg(long = "api-duration", default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Open connections wrk keeps busy.
    #[arg(long = "api-connections", default_value_t = 16)]
    pub connections: usize,
    /// wrk threads (at most the connections).
    #[arg(long = "api-threads", default_value_t = 2)]
    pub threads: usize,
}

const DAY_MS: u64 = 86_400_000;
const HOUR_MS: u64 = 3_600_000;
/// Records per `/push`: under the collector's default 10,000-record and 4 MiB
/// limits, so the collectors run with their default configuration.
const PUSH_CHUNK: usize = 5_000;
/// Statuses `/dump_last?status=` asks for.
const ERROR_STATUSES: [u16; 3] = [500, 502, 503];
/// What the `site_like` scenario looks for (`%25` is `%` in the URL).
const LIKE_PART: &str = "site012";
/// wrk drops requests slower than its timeout from the latency figures: keep it
/// far above any answer we expect so a slow store shows in p99, not as errors.
const WRK_TIMEOUT: &str = "30s";

/// One pushed probe of a site (the newest round is what the API must answer).
#[derive(Debug, Clone)]
struct Site {
    name: String,
    status: u16,
    ms: u64,
    location: Option<String>,
    cross: bool,
    ts: u64,
}

/// One URL family under load and the answer `/dump_last` must give.
struct Scenario {
    label: String,
    /// Path and query; `None` for `/last`, whose site wrk picks per request.
    path: Option<String>,
    limit: usize,
    order_asc: bool,
    matches: Box<dyn Fn(&Site) -> bool>,
}

/// What wrk measured in one run.
#[derive(Debug, Default)]
struct WrkResult {
    requests: u64,
    rps: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    non_2xx: u64,
    socket_errors: u64,
}

struct Store {
    name: String,
    collector: Collector,
}

/// What the load runs against: the pushed data and both stores.
struct Bench {
    current: Vec<Site>,
    stores: Vec<Store>,
    lua: PathBuf,
    now: u64,
}

pub fn run(env: &Env, args: &Args) -> anyhow::Result<Vec<Table>> {
    ensure!(args.sites > 0, "--api-sites must be at least 1");
    ensure!(
        args.connections >= args.threads && args.threads > 0,
        "--api-connections must be at least --api-threads, which must be at least 1"
    );
    // Outlives `bench`, whose ClickHouse collector uses it.
    let clickhouse = ClickHouseServer::start();
    let mut bench = prepare(env, args, &clickhouse)?;
    let model: HashMap<&str, &Site> = bench.current.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut table = Table::new(
        &format!("HTTP API under load: {} sites, wrk on loopback", args.sites),
        &[
            "store", "endpoint", "req/s", "p50 (ms)", "p90 (ms)", "p99 (ms)", "errors",
        ],
    );
    let mut command = String::new();
    // Stores alternate per scenario so a machine that slows down mid-run
    // disturbs both columns alike.
    for scenario in &scenarios(bench.now) {
        for store in &mut bench.stores {
            let base = format!("http://{}", store.collector.http);
            check_scenario(&base, scenario, &bench.current, &model)?;
            let result;
            (result, command) = load(env, &base, scenario, &bench.lua, args)?;
            store.collector.service.check_running()?;
            ensure!(
                result.non_2xx == 0,
                "{} {}: {} of {} answers were not 2xx (wrk logs in {})",
                store.name,
                scenario.label,
                result.non_2xx,
                result.requests,
                env.dir.display()
            );
            eprintln!(
                "api: {} {}: {} req/s",
                store.name,
                scenario.label,
                num(result.rps)
            );
            table.row(cells(&store.name, &scenario.label, &result));
        }
    }
    notes(&mut table, args, &command);
    Ok(vec![table])
}

/// Both collectors, filled with the same two rounds of every site.
fn prepare(env: &Env, args: &Args, clickhouse: &ClickHouseServer) -> anyhow::Result<Bench> {
    let now = unix_ms();
    let (history, current) = (round(args.sites, now, 1), round(args.sites, now, 0));
    let pki = env.pki(&[])?;
    let sqlite = Collector::start(
        env,
        "api-sqlite",
        &pki,
        &StoreKind::Sqlite(env.path("api.db")),
        "",
    )?;
    let database = "bench_api";
    let store = StoreKind::ClickHouse {
        url: clickhouse.http_url(),
        database: database.into(),
    };
    let ch = Collector::start(env, "api-clickhouse", &pki, &store, "")?;
    for collector in [&sqlite, &ch] {
        push_all(env, collector, &history)?;
        push_all(env, collector, &current)?;
    }
    let version = query(clickhouse, "SELECT version()")?;
    // Folds the pushes' parts as background merges would, so merges do not run
    // during the load and every run starts from one layout.
    for table in ["health_last", "health_history"] {
        query(
            clickhouse,
            &format!("OPTIMIZE TABLE {database}.{table} FINAL"),
        )?;
    }
    eprintln!("api: {} sites pushed twice to both stores", args.sites);
    Ok(Bench {
        lua: write_last_script(env, args.sites)?,
        current,
        now,
        stores: vec![
            Store {
                name: "SQLite".into(),
                collector: sqlite,
            },
            Store {
                name: format!("ClickHouse {}", version.trim()),
                collector: ch,
            },
        ],
    })
}

fn cells(store: &str, label: &str, result: &WrkResult) -> Vec<String> {
    vec![
        store.into(),
        format!("`{label}`"),
        num(result.rps),
        num(result.p50_ms),
        num(result.p90_ms),
        num(result.p99_ms),
        (result.non_2xx + result.socket_errors).to_string(),
    ]
}

fn notes(table: &mut Table, args: &Args, command: &str) {
    table.note(format!(
        "{} sites pushed twice through `POST /push` (history 24-48 h old, newest state over \
         the last 24 h; ~85% 200, 6% 301 same-domain, 3% 301 cross-domain, 5% 5xx, 1% no \
         answer), then read only: no ingest during the load. ClickHouse tables merged \
         (`OPTIMIZE ... FINAL`) before the load.",
        args.sites
    ));
    table.note(format!(
        "wrk {} threads, {} connections, {} s per row; `/last` picks a random site per \
         request (Lua). Every URL was checked once with curl first (count, rows and order \
         against what was pushed). Errors: non-2xx answers plus socket errors (timeout {WRK_TIMEOUT}).",
        args.threads.min(args.connections),
        args.connections,
        wrk_seconds(args.duration)
    ));
    table.note(format!("Last command: `{command}`"));
}

// ---- data -------------------------------------------------------------------

/// A fixed pseudo-random number per (site, round), so both stores and every
/// run get the same data.
fn mix(index: usize, salt: u64) -> u64 {
    let mut z = (index as u64) ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One probe of every site, spread over the 24 h that end `days_back` days
/// before `now`.
fn round(sites: usize, now: u64, days_back: u64) -> Vec<Site> {
    (0..sites)
        .map(|index| {
            let name = nginx::site_name(index);
            let roll = mix(index, days_back * 2 + 1);
            let (status, location, cross) = match roll % 100 {
                0..85 => (200, None, false),
                85..91 => (301, Some(format!("https://www.{name}/")), false),
                91..94 => (
                    301,
                    Some(format!("https://landing.example.net/{name}")),
                    true,
                ),
                94..97 => (500, None, false),
                97 => (502, None, false),
                98 => (503, None, false),
                _ => (0, None, false),
            };
            let age = (index as u64 * DAY_MS) / sites as u64 + days_back * DAY_MS;
            Site {
                ms: 3 + (roll >> 8) % 400,
                // A second off `now` keeps the newest probe out of the future
                // whatever the rounding.
                ts: now - age - 1_000,
                name,
                status,
                location,
                cross,
            }
        })
        .collect()
}

fn push_all(env: &Env, collector: &Collector, sites: &[Site]) -> anyhow::Result<()> {
    let body_path = env.path("api-push.json");
    for chunk in sites.chunks(PUSH_CHUNK) {
        let records: Vec<Value> = chunk
            .iter()
            .map(|s| {
                json!({"site": s.name, "status": s.status, "ms": s.ms, "port": 8080,
                       "location": s.location, "ts": s.ts})
            })
            .collect();
        std::fs::write(&body_path, serde_json::to_vec(&records)?)
            .with_context(|| format!("writing {}", body_path.display()))?;
        let url = format!("http://{}/push", collector.http);
        let mut command = Command::new("curl");
        command
            .args(["-sS", "-X", "POST", "-H", "Content-Type: application/json"])
            .arg("-H")
            .arg(format!("Authorization: Bearer {}", collector.token))
            .arg("--data-binary")
            .arg(format!("@{}", body_path.display()));
        let (code, body) = curl(&mut command, &url)?;
        let answer: Value = serde_json::from_str(&body)
            .with_context(|| format!("POST {url} answered {code}: {body:?}"))?;
        ensure!(
            code == 200 && answer["stored"] == json!(chunk.len()),
            "POST {url} of {} records answered {code}: {body}",
            chunk.len()
        );
    }
    Ok(())
}

/// Runs a prepared curl `command` on `url`; answers the status and the body.
fn curl(command: &mut Command, url: &str) -> anyhow::Result<(u16, String)> {
    let output = command
        .args(["-w", "\n%{http_code}"])
        .arg(url)
        .output()
        .context("running curl")?;
    ensure!(
        output.status.success(),
        "curl {url} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).context("curl printed non-UTF-8")?;
    let (body, code) = text
        .rsplit_once('\n')
        .with_context(|| format!("curl printed no status: {text:?}"))?;
    let code = code
        .trim()
        .parse()
        .with_context(|| format!("curl printed status {code:?}"))?;
    Ok((code, body.to_owned()))
}

// ---- scenarios --------------------------------------------------------------

fn scenarios(now: u64) -> Vec<Scenario> {
    let since = now - 6 * HOUR_MS;
    let statuses: Vec<String> = ERROR_STATUSES.iter().map(u16::to_string).collect();
    let dump =
        |query: String, limit: usize, order_asc: bool, matches: Box<dyn Fn(&Site) -> bool>| {
            let path = format!("/dump_last{query}");
            Scenario {
                label: path.replace(&since.to_string(), "<6h ago>"),
                path: Some(path),
                limit,
                order_asc,
                matches,
            }
        };
    vec![
        Scenario {
            label: "/last?site=<random>".into(),
            path: None,
            limit: 1,
            order_asc: false,
            matches: Box::new(|_| true),
        },
        dump(
            format!("?status={}&limit=200", statuses.join(",")),
            200,
            false,
            Box::new(|s| ERROR_STATUSES.contains(&s.status)),
        ),
        dump(
            "?cross=1&limit=1000".into(),
            1000,
            false,
            Box::new(|s| s.cross),
        ),
        dump(
            format!("?site_like=%25{LIKE_PART}%25"),
            1000,
            false,
            Box::new(|s| s.name.contains(LIKE_PART)),
        ),
        dump(String::new(), 1000, false, Box::new(|_| true)),
        dump(
            format!("?status=301&since={since}&order=asc"),
            1000,
            true,
            Box::new(move |s| s.status == 301 && s.ts >= since),
        ),
    ]
}

/// One request per URL, its answer compared with the pushed data: the load
/// that follows only looks at status codes.
fn check_scenario(
    base: &str,
    scenario: &Scenario,
    current: &[Site],
    model: &HashMap<&str, &Site>,
) -> anyhow::Result<()> {
    let Some(path) = &scenario.path else {
        return check_last(base, current, model);
    };
    let url = format!("{base}{path}");
    let answer = get_json(&url)?;
    let rows = answer["data"]
        .as_array()
        .with_context(|| format!("{url}: no data array in {answer}"))?;
    let matching = current.iter().filter(|s| (scenario.matches)(s)).count();
    let want = matching.min(scenario.limit);
    ensure!(
        rows.len() == want && answer["count"] == json!(want),
        "{url}: {} rows (count {}), expected {want} of {matching} matching sites",
        rows.len(),
        answer["count"]
    );
    let mut previous: Option<u64> = None;
    for row in rows {
        let site = check_row(&url, row, model)?;
        ensure!(
            (scenario.matches)(site),
            "{url}: {} does not match the filter",
            site.name
        );
        let in_order = previous.is_none_or(|p| {
            if scenario.order_asc {
                p <= site.ts
            } else {
                p >= site.ts
            }
        });
        ensure!(in_order, "{url}: {} is out of order", site.name);
        previous = Some(site.ts);
    }
    Ok(())
}

/// A few sites of each kind answer `/last` as pushed.
fn check_last(base: &str, current: &[Site], model: &HashMap<&str, &Site>) -> anyhow::Result<()> {
    let mut picks: Vec<&Site> = current.first().into_iter().chain(current.last()).collect();
    for wanted in [301, 500, 0] {
        picks.extend(current.iter().find(|s| s.status == wanted));
    }
    picks.extend(current.iter().find(|s| s.cross));
    for site in picks {
        let url = format!("{base}/last?site={}", site.name);
        let answer = get_json(&url)?;
        ensure!(
            answer["site"] == json!(site.name),
            "{url} answered {answer}"
        );
        // `/last`'s data names no site: the answer's does.
        let mut row = answer["data"].clone();
        row["site"] = json!(site.name);
        check_row(&url, &row, model)?;
    }
    Ok(())
}

/// A row of an answer equals the pushed newest state of its site.
fn check_row<'a>(
    url: &str,
    row: &Value,
    model: &HashMap<&str, &'a Site>,
) -> anyhow::Result<&'a Site> {
    let name = row["site"]
        .as_str()
        .with_context(|| format!("{url}: a row without a site: {row}"))?;
    let site = model
        .get(name)
        .with_context(|| format!("{url}: unknown site {name}"))?;
    let want = json!({
        "s": site.status, "ms": site.ms, "p": 8080, "l": site.location,
        "x": u8::from(site.cross), "t": site.ts,
    });
    for field in ["s", "ms", "p", "l", "x", "t"] {
        ensure!(
            row[field] == want[field],
            "{url}: {name}.{field} is {}, pushed {}",
            row[field],
            want[field]
        );
    }
    Ok(site)
}

fn get_json(url: &str) -> anyhow::Result<Value> {
    let (code, body) = curl(Command::new("curl").arg("-sS"), url)?;
    ensure!(code == 200, "{url} answered {code}: {body}");
    let answer: Value =
        serde_json::from_str(&body).with_context(|| format!("{url} answered {body:?}"))?;
    ensure!(answer["ok"] == json!(true), "{url} answered {answer}");
    Ok(answer)
}

// ---- wrk --------------------------------------------------------------------

/// A wrk script asking `/last` for a random pushed site on every request, each
/// thread with its own seed.
fn write_last_script(env: &Env, sites: usize) -> anyhow::Result<PathBuf> {
    let path = env.path("api-last.lua");
    let script = format!(
        r#"local sites = {sites}
local counter = 1
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end
function init(args)
  math.randomseed(os.time() * 1000 + id)
end
function request()
  local i = math.random(0, sites - 1)
  return wrk.format("GET", string.format("/last?site=site%05d.com", i))
end
"#
    );
    std::fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn wrk_seconds(duration: Duration) -> u64 {
    duration.as_secs().max(1)
}

/// One wrk run; answers its figures and the command line.
fn load(
    env: &Env,
    base: &str,
    scenario: &Scenario,
    lua: &Path,
    args: &Args,
) -> anyhow::Result<(WrkResult, String)> {
    let mut command = Command::new("wrk");
    command
        .arg(format!("-t{}", args.threads.min(args.connections)))
        .arg(format!("-c{}", args.connections))
        .arg(format!("-d{}s", wrk_seconds(args.duration)))
        .args(["--timeout", WRK_TIMEOUT, "--latency"]);
    let url = match &scenario.path {
        Some(path) => format!("{base}{path}"),
        None => {
            command.arg("-s").arg(lua);
            format!("{base}/last")
        }
    };
    command.arg(&url);
    let shown = show(&command);
    let output = command
        .output()
        .context("running wrk (apt-get install wrk)")?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let log = env.path(&format!("wrk-{}.log", sanitize(&url)));
    std::fs::write(&log, format!("{shown}\n{stdout}"))
        .with_context(|| format!("writing {}", log.display()))?;
    ensure!(
        output.status.success(),
        "{shown} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let result = parse_wrk(&stdout).with_context(|| format!("{shown} printed:\n{stdout}"))?;
    Ok((result, shown))
}

fn show(command: &Command) -> String {
    let mut line = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        let _ = write!(line, " {}", arg.to_string_lossy());
    }
    line
}

fn sanitize(url: &str) -> String {
    let path = url.split_once("//").map_or(url, |(_, rest)| rest);
    path.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Reads wrk's report: latency percentiles (`--latency`), requests, the rate,
/// socket errors and non-2xx answers.
fn parse_wrk(text: &str) -> anyhow::Result<WrkResult> {
    let mut result = WrkResult::default();
    let mut seen = 0;
    for line in text.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        let (Some(first), second) = (words.next(), words.next()) else {
            continue;
        };
        match (first, second) {
            ("50%", Some(v)) => (result.p50_ms, seen) = (latency_ms(v)?, seen + 1),
            ("90%", Some(v)) => (result.p90_ms, seen) = (latency_ms(v)?, seen + 1),
            ("99%", Some(v)) => (result.p99_ms, seen) = (latency_ms(v)?, seen + 1),
            ("Requests/sec:", Some(v)) => (result.rps, seen) = (v.parse()?, seen + 1),
            (n, Some("requests")) => (result.requests, seen) = (n.parse()?, seen + 1),
            ("Socket", Some("errors:")) => result.socket_errors = socket_errors(line)?,
            ("Non-2xx", _) => result.non_2xx = last_number(line)?,
            _ => {}
        }
    }
    ensure!(seen == 5, "wrk's report is missing figures");
    ensure!(result.requests > 0, "wrk made no request");
    Ok(result)
}

/// wrk prints `812.00us`, `1.23ms`, `2.01s`, `1.50m`.
fn latency_ms(value: &str) -> anyhow::Result<f64> {
    let split = value
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("latency {value:?} has no unit"))?;
    let (number, unit) = value.split_at(split);
    let number: f64 = number
        .parse()
        .with_context(|| format!("latency {value:?}"))?;
    let factor = match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1_000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => bail!("latency {value:?} has an unknown unit"),
    };
    Ok(number * factor)
}

/// `Socket errors: connect 0, read 0, write 0, timeout 0`, summed.
fn socket_errors(line: &str) -> anyhow::Result<u64> {
    line.split(',')
        .map(last_number)
        .sum::<anyhow::Result<u64>>()
}

fn last_number(text: &str) -> anyhow::Result<u64> {
    let word = text.split_whitespace().last().unwrap_or_default();
    word.parse()
        .with_context(|| format!("{text:?} does not end with a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 3s test @ http://127.0.0.1:4000/last
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.20ms  500.00us  12.00ms   90.00%
    Req/Sec     6.00k   400.00     7.00k    70.00%
  Latency Distribution
     50%  812.00us
     75%    1.30ms
     90%    2.10ms
     99%    1.05s
  36000 requests in 3.00s, 5.00MB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:  12000.50
Transfer/sec:      1.67MB
";

    #[test]
    fn reads_wrk_report() {
        let r = parse_wrk(REPORT).expect("parsed");
        assert_eq!(r.requests, 36_000);
        assert!((r.rps - 12_000.5).abs() < 1e-9);
        assert!((r.p50_ms - 0.812).abs() < 1e-9);
        assert!((r.p90_ms - 2.1).abs() < 1e-9);
        assert!((r.p99_ms - 1_050.0).abs() < 1e-9);
        assert_eq!((r.socket_errors, r.non_2xx), (3, 7));
    }

    #[test]
    fn a_report_without_percentiles_is_refused() {
        assert!(parse_wrk("  10 requests in 1.00s\nRequests/sec: 10.00\n").is_err());
    }

    #[test]
    fn mix_is_a_realistic_spread() {
        let sites = round(30_000, 10 * DAY_MS, 0);
        let share = |f: &dyn Fn(&Site) -> bool| sites.iter().filter(|s| f(s)).count();
        assert!((24_500..26_500).contains(&share(&|s| s.status == 200)));
        assert!((700..1_100).contains(&share(&|s| s.cross)));
        assert!(sites.iter().all(|s| s.ts > 9 * DAY_MS - 2_000));
    }
}
