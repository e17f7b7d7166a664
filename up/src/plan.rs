//! The pure parts of `up`: the collector's and the agent's configurations, and
//! the banner that tells the user where to look.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use livehead_agent::AgentConfig;
use livehead_alerter::config::AlerterConfig;
use livehead_collector::CollectorConfig;
use livehead_collector::config::{PushToken, RoleToken};

use crate::UpConfig;
use crate::sites::SitesPlan;
use crate::state::{AGENT_NAME, ALERTER_NAME, Layout};

/// Probe starts are spread over this fraction of the interval: short enough
/// that a first round shows up within seconds of the start.
const SPREAD: f64 = 0.2;
/// Every collector certificate `write_dev_pki` issues carries this name.
const COLLECTOR_NAME: &str = "localhost";

/// The SHA-256 of the state's tokens.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub push_sha256: String,
    pub admin_sha256: String,
}

impl Tokens {
    /// The `admin` role token: the collector's reads and the alerter's API
    /// (one shape, `livehead_common::roles::RoleToken`).
    fn admin(&self) -> RoleToken {
        RoleToken {
            name: "admin".to_owned(),
            sha256: self.admin_sha256.clone(),
            role: "admin".to_owned(),
            sites: Vec::new(),
        }
    }
}

/// The collector: SQLite in the state directory, gRPC on a loopback port
/// chosen by the OS (only the in-process agent uses it), mTLS with the dev
/// PKI, the API on `config.listen` accepting the state's push token, and its
/// admin token for `/stats`.
pub fn collector_config(config: &UpConfig, layout: &Layout, tokens: &Tokens) -> CollectorConfig {
    let mut c = CollectorConfig {
        grpc_listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        http_listen: config.listen,
        tls: Some(layout.collector_tls()),
        insecure: false,
        ..CollectorConfig::default()
    };
    c.storage.clickhouse_url = None;
    c.storage.sqlite_path = layout.database.clone();
    c.storage.history = config.history;
    if let Some(days) = config.retention_days {
        c.storage.retention_days = days;
    }
    c.api.push_tokens = vec![PushToken {
        name: AGENT_NAME.to_owned(),
        sha256: tokens.push_sha256.clone(),
    }];
    c.api.tokens = vec![tokens.admin()];
    // Only the in-process alerter's certificate, never the agent's.
    c.watch.allow = vec![ALERTER_NAME.to_owned()];
    c.dashboard.session_key_file = Some(layout.session_key.clone());
    // The dashboard's alert actions go to the in-process alerter, with the
    // admin token it accepts.
    if config.rules.is_some() {
        c.dashboard.alerter_url = Some(format!("http://{}", reachable(config.alerter_listen)));
        c.dashboard.alerter_token_file = Some(layout.admin_token.clone());
    }
    c
}

/// The alerter of `up --rules`: watching the collector at `grpc_addr` with
/// its own certificate, its state next to the database, its API on
/// `alerter_listen` with the admin token.
pub fn alerter_config(
    config: &UpConfig,
    rules: &Path,
    layout: &Layout,
    tokens: &Tokens,
    grpc_addr: SocketAddr,
) -> AlerterConfig {
    let mut c = AlerterConfig {
        rules: Some(rules.to_owned()),
        state_dir: layout.alerter.clone(),
        ..AlerterConfig::default()
    };
    c.collectors.urls = vec![format!("https://{grpc_addr}")];
    c.collectors.server_name = Some(COLLECTOR_NAME.to_owned());
    c.collectors.tls = Some(layout.alerter_tls());
    c.api.listen = config.alerter_listen;
    c.api.tokens = vec![tokens.admin()];
    c
}

/// The agent: the planned sites, streaming to the collector at `grpc_addr`
/// with the `local` client certificate. Its `/metrics` is off (the collector's
/// is on the API port), so `up` needs one port only.
pub fn agent_config(
    config: &UpConfig,
    layout: &Layout,
    sites: &SitesPlan,
    grpc_addr: SocketAddr,
) -> AgentConfig {
    let mut c = AgentConfig {
        target: config.target.clone(),
        metrics_listen: None,
        ..AgentConfig::default()
    };
    c.sites.web_root = sites.web_root.clone();
    c.sites.list_file = sites.list_file.clone();
    c.rounds.interval = config.interval;
    c.rounds.spread = SPREAD;
    c.collector.url = format!("https://{grpc_addr}");
    c.collector.server_name = Some(COLLECTOR_NAME.to_owned());
    c.collector.tls = Some(layout.agent_tls());
    c.collector.insecure = false;
    c
}

/// What the banner reports.
#[derive(Debug, Clone)]
pub struct Ready<'a> {
    /// Sites found at start (a web root or live list may change that later).
    pub sites: usize,
    /// A site to show in the `/last` example.
    pub example_site: Option<&'a str>,
    pub interval: Duration,
    pub target: Option<&'a str>,
    pub http_addr: SocketAddr,
    pub layout: &'a Layout,
    /// The alerter's API and rules file, with `--rules`.
    pub alerter: Option<(SocketAddr, &'a Path)>,
}

/// The text printed on stdout once the API listens.
pub fn banner(ready: &Ready<'_>) -> String {
    let api = format!("http://{}", reachable(ready.http_addr));
    let db = shell_quote(ready.layout.database.as_path());
    let token = shell_quote(ready.layout.push_token.as_path());
    let admin = shell_quote(ready.layout.admin_token.as_path());
    let plural = if ready.sites == 1 { "" } else { "s" };
    let at = ready.target.map(|t| format!(" at {t}")).unwrap_or_default();
    let example = ready.example_site.unwrap_or("example.com");
    let interval = humantime::format_duration(ready.interval);
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "livehead is up: probing {n} site{plural}{at} every {interval}\n\
         \x20 API       {api}   (/health /last /dump_last /push /stats /metrics)\n\
         \x20 database  {db}   (SQLite; try: sqlite3 {db} 'SELECT site,status,ms,ts FROM health_last ORDER BY ts DESC LIMIT 20')\n\
         \x20 token     {token}   (for POST /push: -H \"Authorization: Bearer $(cat {token})\")\n\
         \x20 admin     {admin}   (for /stats: -H \"Authorization: Bearer $(cat {admin})\")\n\
         Try:\n\
         \x20 curl -s '{api}/dump_last?limit=20'\n\
         \x20 curl -s '{api}/last?site={example}'\n\
         \x20 curl -s '{api}/dump_last?status=500,502,503'\n\
         \x20 curl -s '{api}/dump_last?cross=1'\n\
         \x20 curl -s -H \"Authorization: Bearer $(cat {admin})\" '{api}/stats/server'\n",
        n = ready.sites,
    );
    if let Some((addr, rules)) = ready.alerter {
        let alerts = format!("http://{}", reachable(addr));
        let rules = shell_quote(rules);
        let _ = write!(
            out,
            "Alerter: rules {rules} (reload: kill -HUP {pid})\n\
             \x20 alerts    curl -s -H \"Authorization: Bearer $(cat {admin})\" '{alerts}/alerts'\n",
            pid = std::process::id(),
        );
    }
    out.push_str("Stop with Ctrl-C.\n");
    out
}

/// An address a client can dial: a wildcard listen address is reached on loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((Ipv4Addr::LOCALHOST, addr.port()))
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    }
}

/// A path as a shell word, so the printed commands can be pasted as they are.
fn shell_quote(path: &Path) -> String {
    let text = path.display().to_string();
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+,:@%".contains(c);
    if !text.is_empty() && text.chars().all(safe) {
        text
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn up() -> UpConfig {
        UpConfig {
            state_dir: ".livehead".into(),
            listen: "127.0.0.1:7080".parse().expect("addr"),
            interval: Duration::from_secs(60),
            target: Some("10.0.0.7:8080".into()),
            sites: vec!["www".into()],
            history: false,
            retention_days: Some(7),
            rules: None,
            alerter_listen: "127.0.0.1:7090".parse().expect("addr"),
        }
    }

    #[test]
    fn the_collector_uses_sqlite_in_the_state_dir_and_the_token() {
        let layout = Layout::new(Path::new(".livehead"));
        let tokens = Tokens {
            push_sha256: "ab12".into(),
            admin_sha256: "cd34".into(),
        };
        let c = collector_config(&up(), &layout, &tokens);
        assert_eq!(c.storage.clickhouse_url, None);
        assert_eq!(
            c.storage.sqlite_path,
            PathBuf::from(".livehead/livehead.db")
        );
        assert!(!c.storage.history);
        assert_eq!(c.storage.retention_days, 7);
        assert_eq!(c.http_listen, up().listen);
        assert_eq!(c.grpc_listen.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(c.grpc_listen.port(), 0);
        assert!(!c.insecure);
        let tls = c.tls.expect("mTLS");
        assert_eq!(tls.cert, PathBuf::from(".livehead/pki/collector.pem"));
        assert_eq!(tls.ca, PathBuf::from(".livehead/pki/ca.pem"));
        assert_eq!(
            c.api.push_tokens,
            [PushToken {
                name: "local".into(),
                sha256: "ab12".into()
            }]
        );
        let admin = &c.api.tokens[..];
        assert_eq!(admin.len(), 1);
        assert_eq!(
            (admin[0].sha256.as_str(), admin[0].role.as_str()),
            ("cd34", "admin")
        );
        assert_eq!(
            c.dashboard.session_key_file,
            Some(PathBuf::from(".livehead/session-key"))
        );
        assert_eq!(c.dashboard.alerter_url, None, "no alerter without --rules");
        let with_rules = UpConfig {
            rules: Some("rules.toml".into()),
            alerter_listen: "0.0.0.0:7090".parse().expect("addr"),
            ..up()
        };
        let c = collector_config(&with_rules, &layout, &tokens);
        assert_eq!(
            c.dashboard.alerter_url.as_deref(),
            Some("http://127.0.0.1:7090")
        );
        assert_eq!(
            c.dashboard.alerter_token_file,
            Some(PathBuf::from(".livehead/admin-token"))
        );
    }

    #[test]
    fn the_agent_dials_the_collector_with_its_certificate() {
        let layout = Layout::new(Path::new("/s"));
        let sites = SitesPlan {
            web_root: Some("/www".into()),
            list_file: Some("/s/sites.txt".into()),
            merged: None,
        };
        let grpc = "127.0.0.1:41234".parse().expect("addr");
        let c = agent_config(&up(), &layout, &sites, grpc);
        assert_eq!(c.collector.url, "https://127.0.0.1:41234");
        assert_eq!(c.collector.server_name.as_deref(), Some("localhost"));
        let tls = c.collector.tls.expect("mTLS");
        assert_eq!(tls.cert, PathBuf::from("/s/pki/agent-local.pem"));
        assert_eq!(tls.key, PathBuf::from("/s/pki/agent-local-key.pem"));
        assert_eq!(c.id, None, "the certificate names the agent");
        assert_eq!(c.sites.web_root, Some("/www".into()));
        assert_eq!(c.sites.list_file, Some("/s/sites.txt".into()));
        assert_eq!(c.target.as_deref(), Some("10.0.0.7:8080"));
        assert_eq!(c.rounds.interval, Duration::from_secs(60));
        assert_eq!(c.metrics_listen, None);
        assert!(c.batch.max_delay < Duration::from_secs(1));
    }

    #[test]
    fn the_banner_gives_working_commands() {
        let layout = Layout::new(Path::new("my state"));
        let text = banner(&Ready {
            sites: 3,
            example_site: Some("shop.example.net"),
            interval: Duration::from_secs(60),
            target: None,
            http_addr: "0.0.0.0:7081".parse().expect("addr"),
            layout: &layout,
            alerter: None,
        });
        assert!(
            text.starts_with("livehead is up: probing 3 sites every 1m\n"),
            "{text}"
        );
        assert!(
            text.contains("curl -s 'http://127.0.0.1:7081/last?site=shop.example.net'"),
            "{text}"
        );
        assert!(
            text.contains("sqlite3 'my state/livehead.db' 'SELECT"),
            "{text}"
        );
        assert!(text.contains("$(cat 'my state/push-token')"), "{text}");
        assert!(text.ends_with("Stop with Ctrl-C.\n"), "{text}");

        let one = banner(&Ready {
            sites: 1,
            example_site: None,
            interval: Duration::from_secs(5),
            target: Some("10.0.0.7:8080"),
            http_addr: "[::]:7080".parse().expect("addr"),
            layout: &layout,
            alerter: Some((
                "0.0.0.0:7090".parse().expect("addr"),
                Path::new("rules.toml"),
            )),
        });
        assert!(
            one.starts_with("livehead is up: probing 1 site at 10.0.0.7:8080 every 5s\n"),
            "{one}"
        );
        assert!(
            one.contains("curl -s -H \"Authorization: Bearer $(cat 'my state/admin-token')\" 'http://127.0.0.1:7090/alerts'"),
            "{one}"
        );
        assert!(one.ends_with("Stop with Ctrl-C.\n"), "{one}");
        assert!(
            one.contains("http://[::1]:7080/last?site=example.com"),
            "{one}"
        );
    }
}
