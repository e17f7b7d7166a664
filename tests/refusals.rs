//! What the collector refuses: clients without a certificate or with one from
//! another CA, batches naming another agent, and invalid records (while the
//! valid records of the same batch are stored). In-process collector, real
//! ClickHouse.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use livehead_agent::AgentConfig;
use livehead_collector::CollectorConfig;
use livehead_collector::config::Limits;
use livehead_collector::store::StorageConfig;
use livehead_common::Shutdown;
use livehead_common::tls::{TlsFiles, client_config};
use livehead_proto::v1::ingest_service_client::IngestServiceClient;
use livehead_proto::v1::{
    ProbeMethod, ProbeResult, PushRequest, PushResponse, Record, record::Kind,
};
use livehead_testkit::clickhouse::ClickHouseServer;
use livehead_testkit::pki::TestPki;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

struct Setup {
    ch: ClickHouseServer,
    db: String,
    pki: TestPki,
    grpc: std::net::SocketAddr,
    http: std::net::SocketAddr,
    shutdown: Shutdown,
}

async fn setup(name: &str) -> Setup {
    setup_with(name, Limits::default()).await
}

async fn setup_with(name: &str, limits: Limits) -> Setup {
    livehead_common::tls::install_crypto_provider();
    let ch = ClickHouseServer::start();
    let db = ch.unique_database(name);
    let pki = TestPki::new(&["node-1"]);
    let config = CollectorConfig {
        grpc_listen: "127.0.0.1:0".parse().expect("addr"),
        http_listen: "127.0.0.1:0".parse().expect("addr"),
        tls: Some(pki.collector()),
        storage: StorageConfig {
            clickhouse_url: Some(ch.http_url()),
            database: db.clone(),
            ..Default::default()
        },
        limits,
        ..Default::default()
    };
    let shutdown = Shutdown::new();
    let running = livehead_collector::start(config, shutdown.clone())
        .await
        .expect("collector starts");
    Setup {
        grpc: running.grpc_addr,
        http: running.http_addr,
        ch,
        db,
        pki,
        shutdown,
    }
}

fn endpoint(grpc: std::net::SocketAddr, tls: ClientTlsConfig) -> Endpoint {
    Endpoint::from_shared(format!("https://{grpc}"))
        .expect("uri")
        .tls_config(tls)
        .expect("tls")
        .timeout(Duration::from_secs(10))
}

/// Connects and pushes one batch; returns the first ack or the error.
async fn push(endpoint: Endpoint, batch: PushRequest) -> Result<PushResponse, String> {
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let mut client = IngestServiceClient::new(channel);
    let mut acks = client
        .push(tokio_stream::iter([batch]))
        .await
        .map_err(|s| format!("push: {s}"))?
        .into_inner();
    match acks.message().await {
        Ok(Some(ack)) => Ok(ack),
        Ok(None) => Err("stream closed without an ack".into()),
        Err(s) => Err(format!("{:?}: {}", s.code(), s.message())),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

fn probe(site: &str) -> Record {
    Record {
        kind: Some(Kind::Probe(ProbeResult {
            site: site.into(),
            status: 200,
            method: ProbeMethod::Head as i32,
            latency_us: 1500,
            connect_us: 100,
            first_byte_us: 1400,
            port: 8080,
            ts_ms: now_ms(),
            target: "10.0.0.7:8080".into(),
            ..Default::default()
        })),
    }
}

fn batch(agent: &str, seq: u64, records: Vec<Record>) -> PushRequest {
    PushRequest {
        agent_id: agent.into(),
        seq,
        records,
    }
}

fn ca_only(pki: &TestPki) -> ClientTlsConfig {
    let ca = std::fs::read(pki.dir().join("ca.pem")).expect("ca");
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost")
}

fn agent_tls(files: &TlsFiles) -> ClientTlsConfig {
    client_config(files, "localhost").expect("client TLS")
}

fn count(s: &Setup, sql: &str) -> u64 {
    s.ch.query_in(&s.db, sql).trim().parse().expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_a_trusted_certificate_are_refused() {
    let s = setup("refuse_certs").await;
    let no_cert = push(
        endpoint(s.grpc, ca_only(&s.pki)),
        batch("", 1, vec![probe("a.example")]),
    )
    .await;
    assert!(
        no_cert.is_err(),
        "no client certificate must be refused: {no_cert:?}"
    );
    let foreign = s.pki.foreign_agent("node-1");
    let other_ca = push(
        endpoint(s.grpc, agent_tls(&foreign)),
        batch("", 2, vec![probe("a.example")]),
    )
    .await;
    assert!(
        other_ca.is_err(),
        "a certificate from another CA must be refused: {other_ca:?}"
    );
    assert_eq!(
        count(&s, "SELECT count() FROM health_history"),
        0,
        "nothing stored"
    );

    let good = push(
        endpoint(s.grpc, agent_tls(&s.pki.agent("node-1"))),
        batch("", 3, vec![probe("a.example")]),
    )
    .await;
    assert_eq!(
        good.map(|a| (a.seq, a.accepted)),
        Ok((3, 1)),
        "the CA's own agent is accepted"
    );
    s.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_cannot_impersonate_another_agent() {
    let s = setup("refuse_identity").await;
    let tls = agent_tls(&s.pki.agent("node-1"));
    let err = push(
        endpoint(s.grpc, tls),
        batch("node-2", 1, vec![probe("a.example")]),
    )
    .await;
    let err = err.expect_err("agent id differs from the certificate");
    assert!(
        err.contains("PermissionDenied") && err.contains("node-2"),
        "{err}"
    );
    assert_eq!(count(&s, "SELECT count() FROM health_history"), 0);
    s.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_records_are_counted_and_valid_ones_stored() {
    let s = setup("refuse_records").await;
    let tls = agent_tls(&s.pki.agent("node-1"));
    let mut bad_status = probe("c.example");
    if let Some(Kind::Probe(p)) = &mut bad_status.kind {
        p.status = 999;
    }
    let records = vec![
        probe("a.example"),
        probe("not a host!"),
        bad_status,
        probe("b.example"),
    ];
    let ack = push(
        endpoint(s.grpc, tls.clone()),
        batch("node-1", 7, records.clone()),
    )
    .await
    .expect("ack");
    assert_eq!((ack.seq, ack.accepted, ack.duplicate), (7, 2, false));
    let rejected: Vec<(u32, &str)> = ack
        .rejected
        .iter()
        .map(|r| (r.index, r.field.as_str()))
        .collect();
    assert_eq!(rejected, [(1, "probe.site"), (2, "probe.status")]);
    assert!(
        ack.rejected[0].reason.contains("not a host!"),
        "{:?}",
        ack.rejected[0]
    );
    let stored = s.ch.query_in(
        &s.db,
        "SELECT site, agent FROM health_history ORDER BY site",
    );
    assert_eq!(
        stored.lines().collect::<Vec<_>>(),
        ["a.example\tnode-1", "b.example\tnode-1"]
    );

    // The same batch again (as after a reconnect) is recognised and not rewritten.
    let again = push(endpoint(s.grpc, tls), batch("node-1", 7, records))
        .await
        .expect("ack");
    assert_eq!((again.accepted, again.duplicate), (0, true));
    assert_eq!(count(&s, "SELECT count() FROM health_history"), 2);

    let (_, metrics) = support::http_get(s.http, "/metrics").expect("metrics");
    assert!(
        metrics.contains("livehead_collector_rejects_total{field=\"probe.site\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("livehead_collector_rejects_total{field=\"probe.status\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("livehead_collector_batches_total{outcome=\"duplicate\"} 1"),
        "{metrics}"
    );
    s.shutdown.cancel();
}

/// A batch over the collector's record limit is cut to fit (the limit the
/// collector announces, or in halves on `ResourceExhausted`) and every record
/// is stored, where it used to be dropped whole. Needs the collector side of
/// the contract; refusals the agent drops (`InvalidArgument`) and the
/// batches behind them are covered by agent/tests/transport.rs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_over_the_record_limit_is_delivered_in_pieces() {
    let limits = Limits {
        max_batch_records: 3,
        ..Limits::default()
    };
    let s = setup_with("refuse_batch", limits).await;
    let sites = livehead_testkit::sites::FakeSites::start().await;
    let dir = tempfile::tempdir().expect("tmp");
    let list = dir.path().join("sites.txt");
    std::fs::write(
        &list,
        "a.example\nb.example\nc.example\nd.example\ne.example\n",
    )
    .expect("sites");

    let mut config = AgentConfig::default();
    config.sites.list_file = Some(list);
    config.target = Some(format!("127.0.0.1:{}", sites.port()));
    config.rounds.interval = Duration::from_secs(3600);
    config.rounds.spread = 0.0;
    config.rounds.concurrency = 1;
    config.batch.max_records = 4;
    config.batch.max_delay = Duration::from_millis(200);
    config.collector.url = format!("https://{}", s.grpc);
    config.collector.server_name = Some("localhost".into());
    config.collector.tls = Some(s.pki.agent("node-1"));
    config.collector.reconnect_min = Duration::from_millis(50);
    config.metrics_listen = None;
    let agent_stop = Shutdown::new();
    let agent = tokio::spawn(livehead_agent::run(config, agent_stop.clone()));

    // 5 probes: a batch of 4 (over 3: cut in pieces) and a batch of 1.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while count(&s, "SELECT count() FROM health_history") < 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "not every record arrived: {}",
            s.ch.query_in(&s.db, "SELECT site FROM health_history")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stored =
        s.ch.query_in(&s.db, "SELECT site FROM health_history ORDER BY site");
    assert_eq!(
        stored.lines().collect::<Vec<_>>(),
        [
            "a.example",
            "b.example",
            "c.example",
            "d.example",
            "e.example"
        ],
        "every record stored once"
    );
    agent_stop.cancel();
    agent
        .await
        .expect("agent task")
        .expect("agent stops cleanly");
    s.shutdown.cancel();
}
