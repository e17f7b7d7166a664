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
        trace_context: Default::default(),
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
/// is stored, where it used to be dropped whole. Refusals the agent drops
/// (`InvalidArgument`) and the batches behind them are covered by
/// agent/tests/transport.rs.
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

/// Sends raw bytes as `Push` messages: what a broken or hostile client sends.
#[derive(Clone, Copy)]
struct RawCodec;

struct RawEncoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(buf, &item);
        Ok(())
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = PushResponse;
    type Encoder = RawEncoder;
    type Decoder = tonic_prost::ProstDecoder<PushResponse>;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

/// Opens one stream, sends `messages` as they are, and returns the acks and
/// the status that ended the stream (`None`: it ended OK).
async fn push_raw(
    endpoint: Endpoint,
    messages: Vec<Vec<u8>>,
    compress: bool,
) -> (Vec<u64>, Option<tonic::Status>) {
    let channel = endpoint.connect().await.expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    if compress {
        grpc = grpc.send_compressed(tonic::codec::CompressionEncoding::Zstd);
    }
    grpc.ready().await.expect("ready");
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/livehead.v1.IngestService/Push");
    let request = tonic::Request::new(tokio_stream::iter(messages));
    let mut acks = match grpc.streaming(request, path, RawCodec).await {
        Ok(response) => response.into_inner(),
        Err(status) => return (Vec::new(), Some(status)),
    };
    let mut seqs = Vec::new();
    loop {
        match acks.message().await {
            Ok(Some(ack)) => seqs.push(ack.seq),
            Ok(None) => return (seqs, None),
            Err(status) => return (seqs, Some(status)),
        }
    }
}

/// Every message the collector cannot take ends the stream with the status
/// that says why, after the acks of the batches before it, so the agent knows
/// the refusal is about its oldest unacknowledged batch: never an OK end of
/// stream without an ack (which made agents resend the batch forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_and_oversized_messages_are_refused_with_a_status() {
    use prost::Message;
    use tonic::Code;
    let limits = Limits {
        max_message_bytes: 20_000,
        max_batch_records: 100,
        ..Limits::default()
    };
    let s = setup_with("refuse_unreadable", limits).await;
    let ep = endpoint(s.grpc, agent_tls(&s.pki.agent("node-1")));
    let good = |seq: u64| batch("", seq, vec![probe(&format!("s{seq}.example"))]).encode_to_vec();
    let many = batch("", 1, (0..101).map(|_| probe("a.example")).collect()).encode_to_vec();
    let cases: Vec<(&str, Vec<u8>, bool, Code)> = vec![
        (
            "truncated varint",
            b"\x10\xff".to_vec(),
            false,
            Code::InvalidArgument,
        ),
        (
            "invalid UTF-8",
            b"\x0a\x02\xff\xfe".to_vec(),
            false,
            Code::InvalidArgument,
        ),
        ("garbage", vec![0xff; 64], false, Code::InvalidArgument),
        (
            "over max_message_bytes",
            vec![0; 30_000],
            false,
            Code::OutOfRange,
        ),
        ("zstd bomb", vec![0; 1 << 20], true, Code::ResourceExhausted),
        (
            "over max_batch_records",
            many,
            false,
            Code::ResourceExhausted,
        ),
        (
            "empty records attack",
            b"\x1a\x00".repeat(5_000),
            false,
            Code::ResourceExhausted,
        ),
        (
            "seq over 2^63",
            {
                let mut b = batch("", 1 << 63, vec![probe("a.example")]);
                b.seq = 1 << 63;
                b.encode_to_vec()
            },
            false,
            Code::InvalidArgument,
        ),
    ];
    let total = cases.len() as u64;
    for (seq, (what, bad, compress, code)) in (10..).zip(cases) {
        let (acks, status) = push_raw(ep.clone(), vec![good(seq), bad], compress).await;
        assert_eq!(acks, [seq], "{what}: the batch before is acked first");
        let status = status.unwrap_or_else(|| panic!("{what}: the stream ended OK"));
        assert_eq!(status.code(), code, "{what}: {status:?}");
    }
    assert_eq!(count(&s, "SELECT count() FROM health_history"), total);
    let (_, metrics) = support::http_get(s.http, "/metrics").expect("metrics");
    assert!(
        metrics.contains(&format!(
            "livehead_collector_batches_total{{outcome=\"refused\"}} {total}"
        )),
        "{metrics}"
    );
    s.shutdown.cancel();
}

/// The certificate's name becomes the `agent` column: it must be an agent id
/// (host-name syntax), never empty, `push:<token>` (the HTTP pushes' mark),
/// multi-line, a wildcard, overlong or non-ASCII.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_names_that_are_not_agent_ids_are_refused() {
    let s = setup("refuse_names").await;
    let long = "a".repeat(300);
    for (i, name) in ["", "push:pods", "evil\nagent", long.as_str(), "*", "nœud-1"]
        .into_iter()
        .enumerate()
    {
        let files = s.pki.agent_with_common_name(&format!("odd-{i}"), name);
        let result = push(
            endpoint(s.grpc, agent_tls(&files)),
            batch("", 1, vec![probe("a.example")]),
        )
        .await;
        let err = result.expect_err(name);
        assert!(
            err.starts_with("push:") && err.contains("not a valid agent id"),
            "{name:?}: {err}"
        );
    }
    assert_eq!(count(&s, "SELECT count() FROM health_history"), 0);
    s.shutdown.cancel();
}

/// Two processes sharing one certificate that number a batch alike: the
/// second batch is refused with `AlreadyExists` (the agent renumbers it)
/// instead of being acked as a duplicate and lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_sequence_number_with_other_rows_is_refused_not_dropped() {
    let s = setup("refuse_conflict").await;
    let ep = endpoint(s.grpc, agent_tls(&s.pki.agent("node-1")));
    let ack = push(ep.clone(), batch("", 42, vec![probe("a.example")]))
        .await
        .expect("first batch");
    assert_eq!((ack.seq, ack.accepted, ack.duplicate), (42, 1, false));
    let again = push(ep.clone(), batch("", 42, vec![probe("b.example")])).await;
    let err = again.expect_err("a different batch under seq 42");
    assert!(err.starts_with("AlreadyExists"), "{err}");
    assert_eq!(count(&s, "SELECT count() FROM health_history"), 1);
    s.shutdown.cancel();
}

/// The collector's limits travel in the stream's response headers, so agents
/// split their batches before sending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_tells_the_agent_the_collector_limits() {
    let limits = Limits {
        max_message_bytes: 20_000,
        max_batch_records: 77,
        ..Limits::default()
    };
    let s = setup_with("limits_headers", limits).await;
    let channel = endpoint(s.grpc, agent_tls(&s.pki.agent("node-1")))
        .connect()
        .await
        .expect("connect");
    let response = IngestServiceClient::new(channel)
        .push(tokio_stream::iter(Vec::<PushRequest>::new()))
        .await
        .expect("stream");
    let header = |name: &str| {
        response
            .metadata()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(
        header("livehead-max-message-bytes").as_deref(),
        Some("20000")
    );
    assert_eq!(header("livehead-max-batch-records").as_deref(), Some("77"));
    s.shutdown.cancel();
}

/// A client that connects and never completes the TLS handshake (silent, or
/// stopping midway) is disconnected after `limits.tls_handshake_timeout`
/// and counted; agents connecting meanwhile are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_tls_handshakes_are_cut() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let limits = Limits {
        tls_handshake_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let s = setup_with("stalled_handshake", limits).await;
    let mut silent = tokio::net::TcpStream::connect(s.grpc)
        .await
        .expect("connect");
    let mut halfway = tokio::net::TcpStream::connect(s.grpc)
        .await
        .expect("connect");
    // The first bytes of a TLS record header, then nothing.
    halfway.write_all(&[0x16, 0x03, 0x01]).await.expect("write");
    for conn in [&mut silent, &mut halfway] {
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(30), conn.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "a stalled handshake is still open");
    }
    let good = push(
        endpoint(s.grpc, agent_tls(&s.pki.agent("node-1"))),
        batch("", 1, vec![probe("a.example")]),
    )
    .await;
    assert_eq!(good.map(|a| a.accepted), Ok(1));
    let (_, metrics) = support::http_get(s.http, "/metrics").expect("metrics answer");
    assert!(
        support::metric_sum(&metrics, "livehead_collector_tls_handshake_failures_total") >= 2.0,
        "{metrics}"
    );
    s.shutdown.cancel();
}
