//! Certificates rotate without a restart, end to end with the real binary:
//! an agent streams to a collector (SQLite store) while the CA bundle and
//! every certificate are renewed in place the way cert-manager does it (a
//! new CA, the bundle holding both CAs for a while, then only the new one),
//! through Secret-volume symlink swaps. No probe is lost or stored twice,
//! and afterwards a client whose certificate comes from the removed CA is
//! refused while one from the new CA is let in.

mod support;

use std::path::Path;
use std::time::Duration;

use livehead_common::certs::{DevCa, Pem, Usage};
use livehead_proto::v1::PushRequest;
use livehead_proto::v1::ingest_service_client::IngestServiceClient;
use livehead_testkit::free_port;
use livehead_testkit::pki::SecretVolume;
use livehead_testkit::sites::FakeSites;
use support::{Proc, http_get, loopback, metric_sum, wait_for};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// Bounds each wait, so a hang fails the test (not a speed goal).
const WAIT: Duration = Duration::from_secs(60);
const SITES: usize = 40;

/// One side's volume and the material it holds now.
struct Side {
    volume: SecretVolume,
    name: &'static str,
    usage: Usage,
}

impl Side {
    fn new(dir: &Path, name: &'static str, usage: Usage) -> Self {
        Self {
            volume: SecretVolume::new(&dir.join(name)),
            name,
            usage,
        }
    }

    /// A certificate from `issuer`, and `bundle` as the CA file.
    fn publish(&mut self, issuer: &DevCa, bundle: &str) {
        let extra: &[&str] = match self.usage {
            Usage::Server => &["127.0.0.1"],
            Usage::Client => &[],
        };
        let pem = issuer.issue(self.name, extra, self.usage).expect("leaf");
        self.volume.publish(bundle, &pem.cert, &pem.key);
    }

    /// The same certificate, a new bundle.
    fn publish_bundle(&mut self, bundle: &str) {
        let files = self.volume.tls_files();
        let read = |p: &Path| std::fs::read_to_string(p).expect("current PEM");
        self.volume
            .publish(bundle, &read(&files.cert), &read(&files.key));
    }

    fn args(&self) -> Vec<String> {
        let files = self.volume.tls_files();
        let mut args = Vec::new();
        for (flag, path) in [
            ("--tls-ca", files.ca),
            ("--tls-cert", files.cert),
            ("--tls-key", files.key),
        ] {
            args.extend([flag.to_owned(), path.display().to_string()]);
        }
        args.extend(
            [
                "--tls-reload-interval",
                "200ms",
                "--tls-rotation-grace",
                "1s",
            ]
            .map(String::from),
        );
        args
    }
}

fn start_collector(dir: &Path, server: &Side, grpc: u16, http: u16) -> Proc {
    let mut args: Vec<String> = [
        "--log-format",
        "json",
        "collector",
        "--grpc-listen",
        &format!("127.0.0.1:{grpc}"),
        "--http-listen",
        &format!("127.0.0.1:{http}"),
        "--sqlite-path",
        &dir.join("store.db").display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    args.extend(server.args());
    Proc::spawn("collector", &args, dir)
}

fn start_agent(dir: &Path, client: &Side, grpc: u16, sites: &FakeSites, metrics: u16) -> Proc {
    let list = dir.join("sites.txt");
    let names: Vec<String> = (0..SITES).map(|i| format!("site{i:03}.example")).collect();
    std::fs::write(&list, names.join("\n")).expect("sites");
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        "[batch]\nmax_records = 20\nmax_delay = \"50ms\"\n[collector]\n\
         reconnect_min = \"100ms\"\nreconnect_max = \"500ms\"\ndrain_timeout = \"20s\"\n",
    )
    .expect("agent config");
    let mut args: Vec<String> = [
        "--log-format",
        "json",
        "agent",
        "--config",
        &config.display().to_string(),
        "--collector-url",
        &format!("https://127.0.0.1:{grpc}"),
        "--server-name",
        "collector",
        "--sites-file",
        &list.display().to_string(),
        "--target",
        &format!("127.0.0.1:{}", sites.port()),
        "--interval",
        "300ms",
        "--spread",
        "0",
        "--no-content",
        "--no-sample",
        "--metrics-listen",
        &format!("127.0.0.1:{metrics}"),
    ]
    .map(String::from)
    .to_vec();
    args.extend(client.args());
    Proc::spawn("agent", &args, dir)
}

fn sqlite_count(db: &Path, sql: &str) -> u64 {
    let out = std::process::Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .expect("sqlite3 (apt install sqlite3)");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

fn metric(port: u16, name: &str) -> Option<f64> {
    let (_, body) = http_get(loopback(port), "/metrics")?;
    Some(metric_sum(&body, name))
}

/// Waits until both processes loaded `n` versions of their files after the
/// first, and `rows` grew past what it was: streams go on with them.
async fn wait_rotated(n: f64, http: u16, agent_metrics: u16, db: &Path, logs: &dyn Fn() -> String) {
    wait_for("the collector reloads its files", WAIT, logs, || {
        (metric(http, "livehead_collector_tls_reloads_total")? >= n).then_some(())
    })
    .await;
    wait_for("the agent reloads its files", WAIT, logs, || {
        (metric(agent_metrics, "livehead_agent_tls_reloads_total")? >= n).then_some(())
    })
    .await;
    // Both sides close their streams within the 1 s grace; what is stored
    // after that went over connections made with the new material.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = sqlite_count(db, "SELECT count(*) FROM health_history");
    wait_for("probes stored after the rotation", WAIT, logs, || {
        (sqlite_count(db, "SELECT count(*) FROM health_history") >= before + 2 * SITES as u64)
            .then_some(())
    })
    .await;
}

/// Whether a client presenting `pem` (and trusting `ca`) may open a push
/// stream on the collector.
async fn push_allowed(grpc: u16, ca: &str, pem: &Pem) -> bool {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(&pem.cert, &pem.key))
        .domain_name("collector");
    let endpoint = Endpoint::from_shared(format!("https://127.0.0.1:{grpc}"))
        .expect("uri")
        .tls_config(tls)
        .expect("tls");
    let Ok(channel) = endpoint.connect().await else {
        return false;
    };
    let requests = tokio_stream::iter(Vec::<PushRequest>::new());
    IngestServiceClient::new(channel)
        .push(requests)
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_every_certificate_and_the_ca_loses_no_probe() {
    livehead_common::tls::install_crypto_provider();
    let sites = FakeSites::start().await;
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("store.db");
    let old_ca = DevCa::generate("livehead CA 1").expect("CA 1");
    let new_ca = DevCa::generate("livehead CA 2").expect("CA 2");
    let (old, new) = (old_ca.cert_pem(), new_ca.cert_pem());
    let both = format!("{old}{new}");
    let mut server = Side::new(dir.path(), "collector", Usage::Server);
    let mut client = Side::new(dir.path(), "node-1", Usage::Client);
    server.publish(&old_ca, old);
    client.publish(&old_ca, old);

    let (grpc, http, agent_metrics) = (free_port(), free_port(), free_port());
    let mut collector = start_collector(dir.path(), &server, grpc, http);
    let mut agent = start_agent(dir.path(), &client, grpc, &sites, agent_metrics);
    let logs = || format!("collector:\n{}\nagent:\n{}", collector.log(), agent.log());
    wait_for("a few rounds stored", WAIT, logs, || {
        (sqlite_count(&db, "SELECT count(*) FROM health_history") >= 3 * SITES as u64).then_some(())
    })
    .await;
    let old_client = old_ca
        .issue("node-2", &[], Usage::Client)
        .expect("old leaf");
    let new_client = new_ca
        .issue("node-2", &[], Usage::Client)
        .expect("new leaf");
    assert!(
        push_allowed(grpc, old, &old_client).await,
        "the first CA is trusted"
    );

    // cert-manager's order: the new CA joins the bundles, the certificates
    // are reissued by it, the old CA leaves the bundles.
    server.publish_bundle(&both);
    client.publish_bundle(&both);
    wait_rotated(1.0, http, agent_metrics, &db, &logs).await;
    server.publish(&new_ca, &both);
    client.publish(&new_ca, &both);
    wait_rotated(2.0, http, agent_metrics, &db, &logs).await;
    server.publish_bundle(new);
    client.publish_bundle(new);
    wait_rotated(3.0, http, agent_metrics, &db, &logs).await;

    assert!(
        !push_allowed(grpc, new, &old_client).await,
        "a certificate of the removed CA is refused"
    );
    assert!(
        push_allowed(grpc, new, &new_client).await,
        "the new CA is trusted"
    );
    let refused = metric(http, "livehead_collector_tls_reload_failures_total");
    assert_eq!(refused, Some(0.0), "symlink swaps are never seen half-done");

    agent.terminate(Duration::from_secs(30));
    let log = agent.log();
    assert!(
        log.contains("TLS certificates renewed"),
        "streams were closed for the rotation: {log}"
    );
    let stopped = log
        .lines()
        .find(|l| l.contains("agent stopped"))
        .expect("agent summary line");
    let field = |name: &str| -> u64 {
        let key = format!("\"{name}\":");
        let rest = &stopped[stopped.find(&key).expect(name) + key.len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|d| d.parse().ok())
            .expect(name)
    };
    assert_eq!(field("unacked_batches"), 0, "{stopped}");
    assert_eq!(field("dropped_records"), 0, "{stopped}");
    let spooled = field("records_spooled");
    assert_eq!(
        sqlite_count(&db, "SELECT count(*) FROM health_history"),
        spooled,
        "every probe is stored"
    );
    assert_eq!(
        sqlite_count(
            &db,
            "SELECT count(*) FROM (SELECT DISTINCT site, ts FROM health_history)"
        ),
        spooled,
        "no probe is stored twice"
    );
    collector.terminate(Duration::from_secs(15));
}

/// A renewal that writes a broken certificate is refused, counted, and the
/// collector goes on with the old one (new connections included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_renewal_keeps_the_old_certificate() {
    livehead_common::tls::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tmp");
    let ca = DevCa::generate("livehead CA").expect("CA");
    let mut server = Side::new(dir.path(), "collector", Usage::Server);
    server.publish(&ca, ca.cert_pem());
    let (grpc, http) = (free_port(), free_port());
    let collector = start_collector(dir.path(), &server, grpc, http);
    let logs = || collector.log();
    wait_for("collector up", WAIT, logs, || {
        metric(http, "livehead_collector_tls_reloads_total")
    })
    .await;
    let files = server.volume.tls_files();
    let key = std::fs::read_to_string(&files.key).expect("key");
    server.volume.publish(
        ca.cert_pem(),
        "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n",
        &key,
    );
    wait_for("the broken certificate is counted", WAIT, logs, || {
        (metric(http, "livehead_collector_tls_reload_failures_total")? >= 1.0).then_some(())
    })
    .await;
    assert!(
        collector.log().contains("tls.pem"),
        "the log names the file: {}",
        collector.log()
    );
    let agent = ca.issue("node-9", &[], Usage::Client).expect("leaf");
    assert!(
        push_allowed(grpc, ca.cert_pem(), &agent).await,
        "the old certificate still serves"
    );
    assert_eq!(
        metric(http, "livehead_collector_tls_reloads_total"),
        Some(0.0)
    );
}
