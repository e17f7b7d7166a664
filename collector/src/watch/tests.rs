//! `WatchService` with an in-process collector on the SQLite store, over
//! mTLS with certificates from the testkit's CA: who may subscribe, what the
//! stream carries (snapshot, `Synced`, batches from gRPC and `/push`), its
//! end on shutdown; and, without sockets, a subscriber falling behind.

use std::net::SocketAddr;
use std::time::Duration;

use livehead_common::Shutdown;
use livehead_common::tls::client_config;
use livehead_proto::v1::ingest_service_client::IngestServiceClient;
use livehead_proto::v1::watch_service_client::WatchServiceClient;
use livehead_proto::v1::{
    ProbeMethod, ProbeResult, PushRequest, Record, ServiceState, WatchRequest, WatchResponse,
    record::Kind, watch_response::Event,
};
use livehead_testkit::pki::TestPki;
use sha2::{Digest, Sha256};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use super::*;
use crate::CollectorConfig;
use crate::config::{ApiConfig, PushToken};
use crate::store::StorageConfig;

const PUSH_SECRET: &str = "push-secret";
/// Bounds every wait on the network, so a broken stream fails the test
/// instead of hanging it (not a speed assertion).
const WAIT: Duration = Duration::from_secs(20);

struct Collector {
    grpc: SocketAddr,
    http: SocketAddr,
    shutdown: Shutdown,
    running: crate::Running,
}

async fn start(pki: &TestPki, sqlite: &std::path::Path, watch: WatchConfig) -> Collector {
    start_with_tls(pki.collector(), sqlite, watch).await
}

async fn start_with_tls(
    tls: livehead_common::tls::TlsFiles,
    sqlite: &std::path::Path,
    watch: WatchConfig,
) -> Collector {
    livehead_common::tls::install_crypto_provider();
    let config = CollectorConfig {
        grpc_listen: "127.0.0.1:0".parse().expect("addr"),
        http_listen: "127.0.0.1:0".parse().expect("addr"),
        tls: Some(tls),
        storage: StorageConfig {
            sqlite_path: sqlite.to_owned(),
            ..StorageConfig::default()
        },
        api: ApiConfig {
            push_tokens: vec![PushToken {
                name: "pods".into(),
                sha256: hex::encode(Sha256::digest(PUSH_SECRET)),
            }],
            ..ApiConfig::default()
        },
        watch,
        ..CollectorConfig::default()
    };
    let shutdown = Shutdown::new();
    let running = crate::start(config, shutdown.clone())
        .await
        .expect("collector starts");
    Collector {
        grpc: running.grpc_addr,
        http: running.http_addr,
        shutdown,
        running,
    }
}

impl Collector {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.running.wait())
            .await
            .expect("the collector stops")
            .expect("clean stop");
    }
}

fn allow(names: &[&str]) -> WatchConfig {
    WatchConfig {
        allow: names.iter().map(|n| (*n).to_owned()).collect(),
        ..WatchConfig::default()
    }
}

async fn channel(pki: &TestPki, who: &str, grpc: SocketAddr) -> Channel {
    let tls = client_config(&pki.agent(who), "localhost").expect("client TLS");
    Endpoint::from_shared(format!("https://{grpc}"))
        .expect("uri")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .expect("connect")
}

async fn watch(
    pki: &TestPki,
    who: &str,
    grpc: SocketAddr,
    skip_snapshot: bool,
) -> Result<tonic::Streaming<WatchResponse>, tonic::Status> {
    let mut client = WatchServiceClient::new(channel(pki, who, grpc).await);
    Ok(client
        .watch(WatchRequest { skip_snapshot })
        .await?
        .into_inner())
}

async fn next(stream: &mut tonic::Streaming<WatchResponse>) -> Event {
    let message = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("a message in time")
        .expect("no error")
        .expect("not the end");
    message.event.expect("an event")
}

fn probe(site: &str, status: u32) -> Record {
    Record {
        kind: Some(Kind::Probe(ProbeResult {
            site: site.into(),
            status,
            method: ProbeMethod::Head as i32,
            latency_us: 1500,
            connect_us: 100,
            first_byte_us: 1400,
            port: 8080,
            ts_ms: livehead_common::clock::unix_ms(),
            target: "10.0.0.7:8080".into(),
            cert_expiry_ms: 1_900_000_000_000,
            ..ProbeResult::default()
        })),
    }
}

fn service(unit: &str, active: &str) -> Record {
    Record {
        kind: Some(Kind::Service(ServiceState {
            ts_ms: livehead_common::clock::unix_ms(),
            unit: unit.into(),
            site: "a.example".into(),
            active_state: active.into(),
            sub_state: "dead".into(),
            ..ServiceState::default()
        })),
    }
}

/// Pushes one batch over gRPC as `agent` and waits for its ack.
async fn push(pki: &TestPki, agent: &str, grpc: SocketAddr, seq: u64, records: Vec<Record>) {
    let mut client = IngestServiceClient::new(channel(pki, agent, grpc).await);
    let batch = PushRequest {
        trace_context: Default::default(),
        agent_id: agent.into(),
        seq,
        records,
    };
    let mut acks = client
        .push(tokio_stream::iter([batch]))
        .await
        .expect("push")
        .into_inner();
    let ack = tokio::time::timeout(WAIT, acks.message())
        .await
        .expect("ack in time")
        .expect("ack")
        .expect("an ack");
    assert_eq!((ack.seq, ack.rejected.len()), (seq, 0), "{ack:?}");
}

#[tokio::test]
async fn an_allowed_identity_gets_the_snapshot_then_synced_then_live_batches() {
    let pki = TestPki::new(&["node-1", "alerter"]);
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("livehead.db");
    let collector = start(&pki, &db, allow(&["alerter"])).await;
    push(
        &pki,
        "node-1",
        collector.grpc,
        1,
        vec![
            probe("a.example", 200),
            service("php-fpm.service", "active"),
        ],
    )
    .await;

    let mut stream = watch(&pki, "alerter", collector.grpc, false)
        .await
        .expect("alerter may watch");
    let Event::Snapshot(chunk) = next(&mut stream).await else {
        panic!("a snapshot first")
    };
    assert_eq!(chunk.agent_id, "node-1");
    // Samples first, then probes (the batch order of kinds).
    assert_eq!(chunk.records.len(), 2, "{chunk:?}");
    assert!(
        matches!(&chunk.records[0].kind, Some(Kind::Service(s)) if s.unit == "php-fpm.service")
    );
    let Some(Kind::Probe(p)) = &chunk.records[1].kind else {
        panic!("a probe: {chunk:?}")
    };
    assert_eq!(
        (p.site.as_str(), p.status, p.port),
        ("a.example", 200, 8080)
    );
    assert_eq!(p.cert_expiry_ms, 1_900_000_000_000);
    let Event::Synced(synced) = next(&mut stream).await else {
        panic!("synced after the snapshot")
    };
    assert!(synced.at_ms > 0);

    // Live: a gRPC batch, then a `/push`, in write order.
    push(
        &pki,
        "node-1",
        collector.grpc,
        2,
        vec![probe("a.example", 503)],
    )
    .await;
    let Event::Batch(batch) = next(&mut stream).await else {
        panic!("a batch")
    };
    assert_eq!((batch.agent_id.as_str(), batch.seq), ("node-1", 2));
    assert!(batch.accepted_ms > 0);
    assert!(
        matches!(&batch.records[..], [Record { kind: Some(Kind::Probe(p)) }] if p.status == 503)
    );

    let body = format!(
        r#"{{"site":"B.example","status":500,"ms":12,"port":80,"ts":{}}}"#,
        livehead_common::clock::unix_ms()
    );
    let answer = livehead_testkit::http_client()
        .post(format!("http://{}/push", collector.http))
        .bearer_auth(PUSH_SECRET)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("push");
    assert_eq!(answer.status(), 200, "{:?}", answer.text().await);
    let Event::Batch(batch) = next(&mut stream).await else {
        panic!("a batch")
    };
    assert_eq!(batch.agent_id, "push:pods");
    assert!(
        matches!(&batch.records[..], [Record { kind: Some(Kind::Probe(p)) }] if p.site == "b.example" && p.status == 500)
    );

    // The alerter's own records are a kind like any other.
    let alert = livehead_proto::v1::AlertEvent {
        ts_ms: livehead_common::clock::unix_ms(),
        alert_id: "00000000000000ff".into(),
        rule: "site-down".into(),
        severity: livehead_proto::v1::AlertSeverity::Critical as i32,
        site: "b.example".into(),
        state: livehead_proto::v1::AlertState::Firing as i32,
        summary: "b.example answers 500".into(),
        ..Default::default()
    };
    let record = Record {
        kind: Some(Kind::Alert(alert)),
    };
    push(&pki, "alerter", collector.grpc, 1, vec![record.clone()]).await;
    let Event::Batch(batch) = next(&mut stream).await else {
        panic!("a batch")
    };
    assert_eq!(
        (batch.agent_id.as_str(), batch.records),
        ("alerter", vec![record])
    );

    // The collector's shutdown ends the stream cleanly.
    collector.shutdown.cancel();
    let end = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("the stream ends");
    assert!(matches!(end, Ok(None)), "{end:?}");
    collector.stop().await;
}

#[tokio::test]
async fn an_agents_certificate_is_denied_and_subscribers_are_bounded() {
    let pki = TestPki::new(&["node-1", "alerter"]);
    let dir = tempfile::tempdir().expect("tmp");
    let watch_config = WatchConfig {
        max_subscribers: 1,
        ..allow(&["alerter"])
    };
    let collector = start(&pki, &dir.path().join("livehead.db"), watch_config).await;
    let denied = watch(&pki, "node-1", collector.grpc, true)
        .await
        .expect_err("an agent may not watch");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(denied.message().contains("\"node-1\""), "{denied:?}");

    let mut first = watch(&pki, "alerter", collector.grpc, true)
        .await
        .expect("first subscriber");
    // With skip_snapshot, `Synced` comes at once.
    assert!(matches!(next(&mut first).await, Event::Synced(_)));
    let second = watch(&pki, "alerter", collector.grpc, true)
        .await
        .expect_err("one subscriber at most");
    assert_eq!(second.code(), Code::ResourceExhausted, "{second:?}");
    assert!(second.message().contains("watch.max_subscribers"));
    drop(first);
    collector.stop().await;
}

#[tokio::test]
async fn the_snapshot_holds_what_the_store_kept_across_a_restart() {
    let pki = TestPki::new(&["node-1", "node-2", "alerter"]);
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("livehead.db");
    let first = start(&pki, &db, allow(&["alerter"])).await;
    push(&pki, "node-1", first.grpc, 1, vec![probe("a.example", 200)]).await;
    push(&pki, "node-2", first.grpc, 1, vec![probe("b.example", 200)]).await;
    // The newer probe of a site replaces the older one, whoever sent it.
    push(&pki, "node-2", first.grpc, 2, vec![probe("a.example", 502)]).await;
    first.stop().await;

    let second = start(&pki, &db, allow(&["alerter"])).await;
    let mut stream = watch(&pki, "alerter", second.grpc, false)
        .await
        .expect("watch");
    let Event::Snapshot(chunk) = next(&mut stream).await else {
        panic!("snapshot")
    };
    assert_eq!(chunk.agent_id, "node-2");
    let sites: Vec<(String, u32)> = chunk
        .records
        .iter()
        .filter_map(|r| match &r.kind {
            Some(Kind::Probe(p)) => Some((p.site.clone(), p.status)),
            _ => None,
        })
        .collect();
    assert_eq!(
        sites,
        [("a.example".to_owned(), 502), ("b.example".to_owned(), 200)]
    );
    assert!(matches!(next(&mut stream).await, Event::Synced(_)));
    second.stop().await;
}

#[test]
fn only_listed_identities_or_a_star_may_watch() {
    let list = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
    assert!(authorize(&list(&["alerter"]), Some("alerter")).is_ok());
    let denied = authorize(&list(&["alerter"]), Some("node-1")).expect_err("agent");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(denied.message().contains("node-1"));
    assert!(authorize(&[], Some("alerter")).is_err());
    assert!(authorize(&list(&["*"]), Some("anyone")).is_ok());
    // Without TLS there is no identity: only "*" opens the stream.
    let insecure = authorize(&list(&["alerter"]), None).expect_err("no identity");
    assert!(insecure.message().contains("\"*\""), "{insecure:?}");
    assert!(authorize(&list(&["*"]), None).is_ok());
}

#[test]
fn snapshot_chunks_are_bounded_and_one_agent_each() {
    use crate::store::ProbeRow;
    let probes = |agent: &'static str, n: usize| {
        (0..n).map(move |i| ProbeRow {
            site: format!("s{i}.example"),
            agent: agent.into(),
            ..ProbeRow::default()
        })
    };
    let rows = Rows {
        probes: probes("a", 5).chain(probes("b", 2)).collect(),
        ..Rows::default()
    };
    let chunks: Vec<(String, usize)> = snapshot_chunks(&rows, 2)
        .into_iter()
        .map(|c| (c.agent_id, c.records.len()))
        .collect();
    let expected: Vec<(String, usize)> = [("a", 2), ("a", 2), ("a", 1), ("b", 2)]
        .iter()
        .map(|(a, n)| ((*a).to_owned(), *n))
        .collect();
    assert_eq!(chunks, expected);
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_is_aborted() {
    let metrics = CollectorMetrics::new();
    let (published, live) = broadcast::channel(2);
    // Five batches while the subscriber has read none: three are lost.
    for seq in 1..=5 {
        let batch = Accepted {
            agent: "node-1".into(),
            seq,
            rows: Rows::default(),
            accepted_ms: 1,
        };
        published.send(Arc::new(batch)).expect("a receiver");
    }
    let permit = Arc::new(Semaphore::new(1))
        .try_acquire_owned()
        .expect("permit");
    let (tx, mut rx) = mpsc::channel(STREAM_QUEUE);
    let subscriber = Subscriber {
        tx,
        metrics: metrics.clone(),
        identity: "alerter".into(),
        _slot: Slot::new(permit, &metrics),
    };
    assert_eq!(metrics.watch_subscribers.get(), 1);
    subscriber
        .run::<crate::store::sqlite::SqliteStore>(None, live, Shutdown::new(), Rotation::never())
        .await;
    let synced = rx.recv().await.expect("synced").expect("ok");
    assert!(matches!(synced.event, Some(Event::Synced(_))));
    let end = rx.recv().await.expect("the end").expect_err("aborted");
    assert_eq!(end.code(), Code::Aborted);
    assert!(
        end.message().contains("fell behind by 3 batches"),
        "{end:?}"
    );
    assert!(rx.recv().await.is_none());
    assert_eq!(metrics.watch_lagged.get(), 1);
    assert_eq!(metrics.watch_subscribers.get(), 0);
}

/// A probe whose redirect target is `limits.max_location_bytes` long: ~2 KiB
/// on the wire, so a few batches outgrow every buffer between the collector
/// and a subscriber that does not read.
fn heavy_probe(i: usize) -> Record {
    let mut record = probe(&format!("s{i}.example"), 301);
    if let Some(Kind::Probe(p)) = &mut record.kind {
        let location = format!("https://other.example/{i}/");
        p.location = format!("{location}{}", "x".repeat(2048 - location.len()));
    }
    record
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_is_aborted_over_grpc() {
    let pki = TestPki::new(&["node-1", "alerter"]);
    let dir = tempfile::tempdir().expect("tmp");
    let watch_config = WatchConfig {
        buffer_batches: 1,
        ..allow(&["alerter"])
    };
    let collector = start(&pki, &dir.path().join("livehead.db"), watch_config).await;
    let mut stream = watch(&pki, "alerter", collector.grpc, true)
        .await
        .expect("watch");
    assert!(matches!(next(&mut stream).await, Event::Synced(_)));
    // ~24 MiB in 48 batches, while it reads none: far more than HTTP/2's
    // windows, the stream's queue (STREAM_QUEUE batches) and the one batch
    // the group commit keeps for it.
    let batches = 48;
    for seq in 1..=batches {
        let records = (0..250).map(heavy_probe).collect();
        push(&pki, "node-1", collector.grpc, seq, records).await;
    }
    let mut received = 0;
    let end = loop {
        let message = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("a message in time");
        match message {
            Ok(Some(_)) => received += 1,
            other => break other,
        }
    };
    let status = end.expect_err("the stream ends with an error");
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert!(status.message().contains("reconnect"), "{status:?}");
    assert!(received < batches, "{received} batches before the end");
    collector.stop().await;
}

/// The collector's certificate renewed in place: the push and watch streams
/// opened before end with `Unavailable` within the grace (after the acks
/// of what was read), and new connections are served.
#[tokio::test]
async fn a_renewed_certificate_ends_the_streams_opened_before() {
    use livehead_common::certs::{DevCa, Usage};
    let pki = TestPki::new(&["node-1", "alerter"]);
    let dir = tempfile::tempdir().expect("tmp");
    let tls = livehead_common::tls::TlsFiles {
        reload_interval: Duration::from_millis(50),
        rotation_grace: Duration::from_millis(200),
        ..pki.collector()
    };
    let collector =
        start_with_tls(tls.clone(), &dir.path().join("c.db"), allow(&["alerter"])).await;
    let mut watching = watch(&pki, "alerter", collector.grpc, true)
        .await
        .expect("watch");
    assert!(matches!(next(&mut watching).await, Event::Synced(_)));
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut acks = IngestServiceClient::new(channel(&pki, "node-1", collector.grpc).await)
        .push(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("push stream")
        .into_inner();
    let batch = |seq| PushRequest {
        agent_id: String::new(),
        seq,
        records: vec![probe("a.example", 200)],
        ..PushRequest::default()
    };
    tx.send(batch(1)).await.expect("send");
    let ack = tokio::time::timeout(WAIT, acks.message())
        .await
        .expect("ack in time");
    assert_eq!(ack.expect("ok").expect("an ack").seq, 1);
    assert!(matches!(next(&mut watching).await, Event::Batch(_)));

    let read = |name: &str| std::fs::read_to_string(pki.dir().join(name)).expect("CA file");
    let ca = DevCa::from_pem(&read("ca.pem"), &read("ca-key.pem")).expect("CA");
    let renewed = ca
        .issue("localhost", &["127.0.0.1"], Usage::Server)
        .expect("renewed certificate");
    std::fs::write(&tls.cert, &renewed.cert).expect("write certificate");
    std::fs::write(&tls.key, &renewed.key).expect("write key");

    let ended = tokio::time::timeout(WAIT, watching.message())
        .await
        .expect("in time");
    let status = ended.expect_err("the watch stream ends");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("renewed"), "{status:?}");
    let ended = tokio::time::timeout(WAIT, acks.message())
        .await
        .expect("in time");
    let status = ended.expect_err("the push stream ends");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    let mut again = watch(&pki, "alerter", collector.grpc, true)
        .await
        .expect("a new connection is served");
    assert!(matches!(next(&mut again).await, Event::Synced(_)));
    drop((again, watching, acks, tx));
    collector.stop().await;
}
