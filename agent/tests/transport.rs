//! The transport against an in-process stub collector that refuses batches
//! the way the real one does (status codes of the collector contract), so
//! each reaction is proven without ClickHouse: every record ends up stored
//! exactly once, or is dropped and counted.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use livehead_agent::batch::{self, BatchBuilder, Seqs};
use livehead_agent::config::{CollectorConnConfig, Compression};
use livehead_agent::metrics::AgentMetrics;
use livehead_agent::split::{MAX_BATCH_RECORDS_HEADER, MAX_MESSAGE_BYTES_HEADER};
use livehead_agent::spool::{DiskStore, SharedSpool};
use livehead_agent::transport::{self, Stops};
use livehead_common::Shutdown;
use livehead_proto::v1::ingest_service_server::{IngestService, IngestServiceServer};
use livehead_proto::v1::{
    FilesystemSample, NodeSample, ProbeResult, PushRequest, PushResponse, Record, record::Kind,
};
use prost::Message;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status, Streaming};

/// How the stub refuses; every refusal ends the stream, as the collector does.
#[derive(Debug, Clone, Default)]
struct Rules {
    /// Announced in the response headers.
    announce: bool,
    /// A larger message is refused with `OutOfRange`.
    max_bytes: Option<usize>,
    /// More records are refused with `ResourceExhausted`.
    max_records: Option<usize>,
    /// Sequence numbers another process already used: `AlreadyExists`.
    taken: HashSet<u64>,
    /// A batch holding this site is refused with `InvalidArgument`.
    invalid_site: Option<String>,
    /// This many streams fail with `Unavailable` after their first batch.
    unavailable_streams: usize,
    /// Acks wait until `release` is notified.
    hold_acks: bool,
}

#[derive(Default)]
struct Seen {
    /// seq -> sites stored under it.
    stored: BTreeMap<u64, Vec<String>>,
    /// seq -> every record stored under it, whatever its kind.
    records: BTreeMap<u64, Vec<Record>>,
    refusals: Vec<tonic::Code>,
    streams: usize,
    largest_bytes: usize,
    largest_records: usize,
    /// The `grpc-encoding` of each stream's messages ("identity" when none).
    encodings: Vec<String>,
}

#[derive(Clone)]
struct Stub {
    rules: Arc<Mutex<Rules>>,
    seen: Arc<Mutex<Seen>>,
    /// One permit per held ack to let go.
    release: Arc<Semaphore>,
}

impl Stub {
    fn seen<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.seen.lock().expect("lock"))
    }

    fn stored_sites(&self) -> Vec<String> {
        self.seen(|s| s.stored.values().flatten().cloned().collect())
    }

    /// The stub's verdict on one batch.
    fn judge(&self, batch: &PushRequest, stream: usize) -> Result<PushResponse, Status> {
        let rules = self.rules.lock().expect("lock").clone();
        let mut seen = self.seen.lock().expect("lock");
        let bytes = batch.encoded_len();
        seen.largest_bytes = seen.largest_bytes.max(bytes);
        seen.largest_records = seen.largest_records.max(batch.records.len());
        let refusal = if rules.max_bytes.is_some_and(|m| bytes > m) {
            Some(Status::out_of_range("message too large"))
        } else if rules.max_records.is_some_and(|m| batch.records.len() > m) {
            Some(Status::resource_exhausted("too many records"))
        } else if rules.taken.contains(&batch.seq) {
            Some(Status::already_exists("another batch holds this seq"))
        } else if rules
            .invalid_site
            .as_ref()
            .is_some_and(|bad| sites(batch).contains(bad))
        {
            Some(Status::invalid_argument("invalid batch"))
        } else if stream <= rules.unavailable_streams {
            Some(Status::unavailable("storage down"))
        } else {
            None
        };
        if let Some(status) = refusal {
            seen.refusals.push(status.code());
            return Err(status);
        }
        let duplicate = seen.stored.contains_key(&batch.seq);
        if !duplicate {
            seen.stored.insert(batch.seq, sites(batch));
            seen.records.insert(batch.seq, batch.records.clone());
        }
        Ok(PushResponse {
            seq: batch.seq,
            accepted: batch.records.len() as u32,
            rejected: vec![],
            duplicate,
        })
    }
}

fn sites(batch: &PushRequest) -> Vec<String> {
    batch
        .records
        .iter()
        .filter_map(|r| match &r.kind {
            Some(Kind::Probe(p)) => Some(p.site.clone()),
            _ => None,
        })
        .collect()
}

#[tonic::async_trait]
impl IngestService for Stub {
    type PushStream = ReceiverStream<Result<PushResponse, Status>>;

    async fn push(
        &self,
        request: Request<Streaming<PushRequest>>,
    ) -> Result<Response<Self::PushStream>, Status> {
        let encoding = request
            .metadata()
            .get("grpc-encoding")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("identity")
            .to_owned();
        let stream = {
            let mut seen = self.seen.lock().expect("lock");
            seen.streams += 1;
            seen.encodings.push(encoding);
            seen.streams
        };
        let rules = self.rules.lock().expect("lock").clone();
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let stub = self.clone();
        tokio::spawn(async move {
            while let Ok(Some(batch)) = inbound.message().await {
                if rules.hold_acks
                    && let Ok(permit) = stub.release.acquire().await
                {
                    permit.forget();
                }
                let verdict = stub.judge(&batch, stream);
                let failed = verdict.is_err();
                if tx.send(verdict).await.is_err() || failed {
                    return;
                }
            }
        });
        let mut response = Response::new(ReceiverStream::new(rx));
        if rules.announce {
            let headers = response.metadata_mut();
            if let Some(m) = rules.max_bytes {
                headers.insert(
                    MAX_MESSAGE_BYTES_HEADER,
                    m.to_string().parse().expect("ascii"),
                );
            }
            if let Some(m) = rules.max_records {
                headers.insert(
                    MAX_BATCH_RECORDS_HEADER,
                    m.to_string().parse().expect("ascii"),
                );
            }
        }
        Ok(response)
    }
}

async fn start_stub(rules: Rules) -> (SocketAddr, Stub) {
    let stub = Stub {
        rules: Arc::new(Mutex::new(rules)),
        seen: Arc::default(),
        release: Arc::new(Semaphore::new(0)),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let service = IngestServiceServer::new(stub.clone())
        .accept_compressed(CompressionEncoding::Zstd)
        .send_compressed(CompressionEncoding::Zstd);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (addr, stub)
}

struct Agent {
    spool: SharedSpool,
    seqs: Seqs,
    metrics: AgentMetrics,
    stops: Stops,
    task: tokio::task::JoinHandle<()>,
}

fn start_transport(addr: SocketAddr, spool_bytes: usize, first_seq: u64) -> Agent {
    let metrics = AgentMetrics::new();
    let spool = SharedSpool::memory(spool_bytes, metrics.clone());
    start_transport_on(addr, spool, metrics, first_seq, Compression::None)
}

fn start_transport_on(
    addr: SocketAddr,
    spool: SharedSpool,
    metrics: AgentMetrics,
    first_seq: u64,
    compression: Compression,
) -> Agent {
    let cfg = CollectorConnConfig {
        compression,
        url: format!("http://{addr}"),
        insecure: true,
        max_in_flight: 8,
        reconnect_min: Duration::from_millis(20),
        reconnect_max: Duration::from_millis(200),
        ..Default::default()
    };
    let connector = transport::connector(&cfg, metrics.tls.clone()).expect("connector");
    let seqs = Seqs::starting_at(first_seq);
    let stops = Stops {
        drain: Shutdown::new(),
        hard: Shutdown::new(),
    };
    let task = tokio::spawn(transport::run(
        connector,
        cfg,
        spool.clone(),
        seqs.clone(),
        metrics.clone(),
        stops.clone(),
    ));
    Agent {
        spool,
        seqs,
        metrics,
        stops,
        task,
    }
}

impl Agent {
    /// Spools a batch of `count` sites named from `first`.
    async fn push(&self, first: usize, count: usize) -> PushRequest {
        let batch = PushRequest {
            trace_context: Default::default(),
            agent_id: "node-1".into(),
            seq: self.seqs.next(),
            records: (first..first + count).map(record).collect(),
        };
        self.spool.push(batch.clone()).await;
        batch
    }

    /// Lets the transport drain, then stops it.
    async fn finish(self) -> AgentMetrics {
        self.stops.drain.cancel();
        if tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .is_err()
        {
            panic!(
                "the transport did not drain: {} waiting",
                self.spool.lock().len()
            );
        }
        self.metrics
    }
}

fn record(i: usize) -> Record {
    Record {
        kind: Some(Kind::Probe(ProbeResult {
            site: site(i),
            status: 200,
            location: "https://www.example.com/some/where/".into(),
            ..Default::default()
        })),
    }
}

fn site(i: usize) -> String {
    format!("site{i:05}.example")
}

async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// The repro: a collector whose message limit is far below the
/// batch size. Without announced limits, each `OutOfRange` splits the oldest
/// batch in halves until the pieces fit; every record is stored once.
#[tokio::test]
async fn batches_refused_as_too_large_are_halved_until_they_fit() {
    let (addr, stub) = start_stub(Rules {
        max_bytes: Some(2_000),
        ..Rules::default()
    })
    .await;
    let agent = start_transport(addr, 1 << 20, 1000);
    agent.push(0, 200).await;
    agent.push(200, 100).await;
    wait_until("300 records stored", || stub.stored_sites().len() >= 300).await;
    let metrics = agent.finish().await;
    assert_eq!(
        sorted(stub.stored_sites()),
        (0..300).map(site).collect::<Vec<_>>()
    );
    assert!(stub.seen(|s| s.refusals.iter().all(|c| *c == tonic::Code::OutOfRange)));
    assert!(metrics.batches_split.get() > 0);
    assert_eq!(metrics.batches_refused.get(), 0);
    assert_eq!(metrics.spool_dropped_records.get(), 0);
}

#[tokio::test]
async fn batches_refused_for_their_record_count_are_split() {
    let (addr, stub) = start_stub(Rules {
        max_records: Some(7),
        ..Rules::default()
    })
    .await;
    let agent = start_transport(addr, 1 << 20, 1000);
    agent.push(0, 50).await;
    wait_until("50 records stored", || stub.stored_sites().len() >= 50).await;
    agent.finish().await;
    assert_eq!(
        sorted(stub.stored_sites()),
        (0..50).map(site).collect::<Vec<_>>()
    );
    assert!(stub.seen(|s| {
        s.refusals
            .iter()
            .all(|c| *c == tonic::Code::ResourceExhausted)
    }));
}

/// With the limits in the response headers, batches are cut before they are
/// sent: nothing is refused, nothing over the limits goes on the wire.
#[tokio::test]
async fn announced_limits_are_never_exceeded() {
    let (addr, stub) = start_stub(Rules {
        announce: true,
        max_bytes: Some(3_000),
        max_records: Some(40),
        ..Rules::default()
    })
    .await;
    let agent = start_transport(addr, 1 << 20, 1000);
    agent.push(0, 500).await;
    agent.push(500, 30).await;
    wait_until("530 records stored", || stub.stored_sites().len() >= 530).await;
    let metrics = agent.finish().await;
    assert_eq!(
        sorted(stub.stored_sites()),
        (0..530).map(site).collect::<Vec<_>>()
    );
    assert_eq!(stub.seen(|s| s.refusals.clone()), [], "nothing refused");
    assert!(stub.seen(|s| s.largest_bytes <= 3_000 && s.largest_records <= 40));
    assert_eq!(
        metrics.batches_split.get(),
        1,
        "only the first batch needed it"
    );
}

#[tokio::test]
async fn a_single_record_too_large_is_dropped_and_counted() {
    let (addr, stub) = start_stub(Rules {
        max_bytes: Some(2_000),
        ..Rules::default()
    })
    .await;
    let agent = start_transport(addr, 1 << 20, 1000);
    let mut huge = record(1);
    if let Some(Kind::Probe(p)) = &mut huge.kind {
        p.location = "x".repeat(5_000);
    }
    let batch = PushRequest {
        trace_context: Default::default(),
        agent_id: "node-1".into(),
        seq: agent.seqs.next(),
        records: vec![record(0), huge, record(2)],
    };
    agent.spool.push(batch).await;
    agent.push(3, 1).await;
    wait_until("the other records stored", || {
        stub.stored_sites().len() >= 3
    })
    .await;
    let metrics = agent.finish().await;
    assert_eq!(sorted(stub.stored_sites()), [site(0), site(2), site(3)]);
    assert_eq!(metrics.batches_refused.get(), 1);
}

#[tokio::test]
async fn an_invalid_batch_is_dropped_and_the_next_ones_delivered() {
    let (addr, stub) = start_stub(Rules {
        invalid_site: Some(site(1)),
        ..Rules::default()
    })
    .await;
    let agent = start_transport(addr, 1 << 20, 1000);
    agent.push(0, 3).await;
    agent.push(3, 2).await;
    wait_until("the second batch stored", || stub.stored_sites().len() >= 2).await;
    let metrics = agent.finish().await;
    assert_eq!(sorted(stub.stored_sites()), [site(3), site(4)]);
    assert_eq!(metrics.batches_refused.get(), 1);
    assert_eq!(
        stub.seen(|s| s.refusals.clone()),
        [tonic::Code::InvalidArgument]
    );
}

/// Two processes sharing one identity: the collector holds another batch
/// under this seq. The batch is resent under a new number, not lost.
#[tokio::test]
async fn a_taken_sequence_number_is_replaced_and_the_batch_resent() {
    let (addr, stub) = start_stub(Rules {
        taken: HashSet::from([1000]),
        ..Rules::default()
    })
    .await;
    let agent = start_transport(addr, 1 << 20, 1000);
    agent.push(0, 5).await;
    agent.push(5, 5).await;
    wait_until("10 records stored", || stub.stored_sites().len() >= 10).await;
    let metrics = agent.finish().await;
    assert_eq!(
        sorted(stub.stored_sites()),
        (0..10).map(site).collect::<Vec<_>>()
    );
    let seqs: Vec<u64> = stub.seen(|s| s.stored.keys().copied().collect());
    assert!(!seqs.contains(&1000) && seqs.contains(&1001), "{seqs:?}");
    assert_eq!(metrics.batches_renumbered.get(), 1);
}

#[tokio::test]
async fn other_failures_keep_the_batch_and_resend_it() {
    let (addr, stub) = start_stub(Rules {
        unavailable_streams: 2,
        ..Rules::default()
    })
    .await;
    let agent = start_transport(addr, 1 << 20, 1000);
    agent.push(0, 4).await;
    wait_until("4 records stored", || stub.stored_sites().len() >= 4).await;
    let metrics = agent.finish().await;
    assert_eq!(
        stub.seen(|s| s.stored.keys().copied().collect::<Vec<_>>()),
        [1000]
    );
    assert_eq!(
        metrics.batches_refused.get() + metrics.batches_renumbered.get(),
        0
    );
    assert!(metrics.reconnects.get() >= 2);
}

/// The encoded size of a batch of `records` records, as the spool counts it.
fn batch_len(records: usize) -> usize {
    PushRequest {
        trace_context: Default::default(),
        agent_id: "node-1".into(),
        seq: u64::MAX,
        records: (0..records).map(record).collect(),
    }
    .encoded_len()
}

/// The issue: batches dropped from a full spool while already sent were
/// counted lost, yet their acks came and their rows were stored.
#[tokio::test]
async fn batches_dropped_from_a_full_spool_while_in_flight_count_only_if_unacked() {
    let (addr, stub) = start_stub(Rules {
        hold_acks: true,
        ..Rules::default()
    })
    .await;
    let one = batch_len(10);
    let agent = start_transport(addr, one * 2, 1000);
    // Each batch is in flight (window 8) before the next push evicts it.
    for i in 0..6 {
        agent.push(i * 10, 10).await;
        let sent = i as u64 + 1;
        wait_until("the batch sent", || {
            agent.metrics.batches_sent.get() >= sent
        })
        .await;
    }
    assert_eq!(agent.spool.lock().len(), 2, "the spool holds its bound");
    stub.release.add_permits(6);
    wait_until("60 records stored", || stub.stored_sites().len() >= 60).await;
    let metrics = agent.finish().await;
    assert_eq!(
        metrics.spool_dropped_records.get(),
        0,
        "every batch was acked"
    );
    assert_eq!(metrics.spool_dropped_batches.get(), 0);
}

#[tokio::test]
async fn batches_dropped_from_a_full_spool_and_never_acked_are_lost_once() {
    let (addr, stub) = start_stub(Rules {
        hold_acks: true,
        unavailable_streams: 1,
        ..Rules::default()
    })
    .await;
    let one = batch_len(10);
    let agent = start_transport(addr, one * 2, 1000);
    for i in 0..2 {
        agent.push(i * 10, 10).await;
        let sent = i as u64 + 1;
        wait_until("the batch sent", || {
            agent.metrics.batches_sent.get() >= sent
        })
        .await;
    }
    // Evicts both in-flight batches; then the stream fails on the first.
    agent.push(20, 10).await;
    agent.push(30, 10).await;
    stub.rules.lock().expect("lock").hold_acks = false;
    stub.release.add_permits(1);
    wait_until("the rest stored", || stub.stored_sites().len() >= 20).await;
    let metrics = agent.finish().await;
    assert_eq!(
        sorted(stub.stored_sites()),
        (20..40).map(site).collect::<Vec<_>>()
    );
    assert_eq!(metrics.spool_dropped_batches.get(), 2);
    assert_eq!(metrics.spool_dropped_records.get(), 20);
}

/// Records of every kind the sampler sends next to probe results.
fn mixed_records() -> Vec<Record> {
    let ts_ms = 1_790_000_000_000;
    let node = NodeSample {
        ts_ms,
        cpu_cores: 8,
        cpu_busy_pct: 12.5,
        load1: 0.75,
        mem_total_bytes: 16 << 30,
        mem_available_bytes: 9 << 30,
        psi_io_some: Some(0.25),
        uptime_s: 86_400,
        ..Default::default()
    };
    let filesystem = FilesystemSample {
        ts_ms,
        mountpoint: "/var/www".into(),
        device: "/dev/sda1".into(),
        fstype: "ext4".into(),
        size_bytes: 100 << 30,
        used_bytes: 40 << 30,
        used_pct: 40.0,
        ..Default::default()
    };
    let mut records = Vec::new();
    for i in 0..7 {
        records.push(record(i));
        records.push(Record {
            kind: Some(Kind::Node(NodeSample {
                ts_ms: ts_ms + i as u64,
                ..node
            })),
        });
        if i % 2 == 0 {
            records.push(Record {
                kind: Some(Kind::Filesystem(filesystem.clone())),
            });
        }
    }
    records
}

/// Sends `records` through the records channel, as the probe rounds and the
/// sampler do (two producers on clones of one sender), into batches of at
/// most 4 records, the spool and the transport; returns what the stub stored,
/// batch after batch.
async fn through_the_pipeline(
    spool: SharedSpool,
    metrics: AgentMetrics,
    compression: Compression,
) -> (Vec<Record>, Vec<String>) {
    let (addr, stub) = start_stub(Rules::default()).await;
    let agent = start_transport_on(addr, spool.clone(), metrics, 1000, compression);
    let builder = BatchBuilder::new("node-1".into(), agent.seqs.clone(), 4, 1 << 20);
    let (tx, rx) = mpsc::channel(2);
    let batcher = tokio::spawn(batch::run(builder, Duration::from_secs(60), rx, spool));
    let records = mixed_records();
    let (probes, samples): (Vec<_>, Vec<_>) = records
        .iter()
        .cloned()
        .partition(|r| matches!(r.kind, Some(Kind::Probe(_))));
    // One producer at a time, so batches come in a known order.
    let second = tx.clone();
    for record in probes {
        tx.send(record).await.expect("batcher running");
    }
    drop(tx);
    for record in samples {
        second.send(record).await.expect("batcher running");
    }
    drop(second);
    let spooled = batcher.await.expect("the batcher ends with its senders");
    assert_eq!(spooled, records.len() as u64);
    wait_until("every record stored", || {
        stub.seen(|s| s.records.values().map(Vec::len).sum::<usize>()) >= records.len()
    })
    .await;
    agent.finish().await;
    let stored = stub.seen(|s| s.records.clone());
    assert!(
        stored
            .values()
            .any(|b| b.iter().any(|r| matches!(r.kind, Some(Kind::Node(_))))
                && b.iter()
                    .any(|r| matches!(r.kind, Some(Kind::Filesystem(_))))),
        "a batch carries more than one sample kind"
    );
    let encodings = stub.seen(|s| s.encodings.clone());
    (stored.into_values().flatten().collect(), encodings)
}

/// Probes first, then samples, each in the order sent.
fn in_sent_order(records: Vec<Record>) -> Vec<Record> {
    let (mut probes, samples): (Vec<_>, Vec<_>) = records
        .into_iter()
        .partition(|r| matches!(r.kind, Some(Kind::Probe(_))));
    probes.extend(samples);
    probes
}

#[tokio::test]
async fn records_of_every_kind_reach_the_collector_unchanged_through_the_memory_spool() {
    let metrics = AgentMetrics::new();
    let spool = SharedSpool::memory(1 << 20, metrics.clone());
    let (stored, encodings) = through_the_pipeline(spool, metrics, Compression::None).await;
    assert_eq!(stored, in_sent_order(mixed_records()));
    assert_eq!(encodings, ["identity"], "uncompressed by default");
}

#[tokio::test]
async fn records_of_every_kind_reach_the_collector_unchanged_through_the_disk_spool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, opened) = DiskStore::open(dir.path()).expect("open the disk spool");
    assert!(opened.entries.is_empty());
    let metrics = AgentMetrics::new();
    let spool = SharedSpool::on_disk(store, opened.entries, 1 << 20, metrics.clone());
    // zstd here, so both wire encodings carry every kind.
    let (stored, encodings) = through_the_pipeline(spool, metrics, Compression::Zstd).await;
    assert_eq!(encodings, ["zstd"]);
    assert_eq!(stored, in_sent_order(mixed_records()));
    let left = std::fs::read_dir(dir.path()).expect("read dir").count();
    assert_eq!(left, 0, "acknowledged batch files are deleted");
}
