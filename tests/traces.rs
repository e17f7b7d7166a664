//! OpenTelemetry traces end to end: a real agent and collector export their
//! spans over OTLP/gRPC to a receiver built here from the official
//! `opentelemetry-proto` service; the agent's batch span and the collector's
//! spans of that batch share one trace. And an exporter endpoint nobody
//! listens on changes nothing for ingest.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use livehead_testkit::free_port;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use support::{Proc, agent_args, certs, http_get, loopback, metric_sum, tls_args, wait_for};
use tokio_stream::wrappers::TcpListenerStream;

const WAIT: Duration = Duration::from_secs(60);

/// One span as the receiver got it.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    attributes: HashMap<String, String>,
}

/// An OTLP trace receiver that keeps every span it is sent.
#[derive(Default, Clone)]
struct Receiver {
    spans: Arc<Mutex<Vec<Received>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut kept = self.spans.lock().expect("lock");
        for resource in request.into_inner().resource_spans {
            let attributes = resource.resource.map(|r| r.attributes).unwrap_or_default();
            let service = strings(&attributes)
                .remove("service.name")
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    kept.push(Received {
                        service: service.clone(),
                        name: span.name,
                        trace_id: span.trace_id,
                        span_id: span.span_id,
                        parent_span_id: span.parent_span_id,
                        attributes: strings(&span.attributes),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn strings(attributes: &[KeyValue]) -> HashMap<String, String> {
    attributes
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(Value::IntValue(i)) => i.to_string(),
                Some(Value::BoolValue(b)) => b.to_string(),
                Some(Value::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

/// Starts the receiver on a free loopback port; its spans, and the endpoint.
async fn receiver() -> (Receiver, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let receiver = Receiver::default();
    let service = TraceServiceServer::new(receiver.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (receiver, endpoint)
}

fn otel_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "200".to_owned()),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000".to_owned()),
    ]
}

fn start_collector(dir: &Path, grpc: u16, http: u16, env: &[(&str, String)]) -> Proc {
    let mut args: Vec<String> = vec![
        "collector".into(),
        "--grpc-listen".into(),
        format!("127.0.0.1:{grpc}"),
        "--http-listen".into(),
        format!("127.0.0.1:{http}"),
        "--sqlite-path".into(),
        dir.join("livehead.db").display().to_string(),
    ];
    args.extend(tls_args(&dir.join("certs"), "collector"));
    Proc::spawn_with_env("collector", &args, env, dir)
}

/// An agent probing one site (at a closed port: every probe is a failure,
/// which is a record all the same) every 500 ms.
fn start_agent(dir: &Path, grpc: u16, env: &[(&str, String)]) -> Proc {
    let sites = dir.join("sites.txt");
    std::fs::write(&sites, "traced.example\n").expect("sites");
    let target = format!("127.0.0.1:{}", free_port());
    let args = agent_args(
        dir,
        "agent-node-1",
        grpc,
        &sites,
        free_port(),
        &[
            "--target",
            &target,
            "--interval",
            "500ms",
            "--spread",
            "0",
            "--no-content",
            "--no-sample",
        ],
    );
    Proc::spawn_with_env("agent", &args, env, dir)
}

async fn wait_healthy(proc: &Proc, http: u16) {
    wait_for(
        "collector /health",
        WAIT,
        || proc.log(),
        || http_get(loopback(http), "/health").filter(|(s, _)| *s == 200),
    )
    .await;
}

/// Rows the collector wrote, from its /metrics.
fn rows_written(http: u16) -> f64 {
    http_get(loopback(http), "/metrics")
        .map(|(_, body)| metric_sum(&body, "livehead_collector_rows_total"))
        .unwrap_or(0.0)
}

/// The first acknowledged agent batch whose collector spans all arrived:
/// (agent batch, collector batch, its children).
fn traced_batch(spans: &[Received]) -> Option<(Received, Received, Vec<Received>)> {
    let batches = spans.iter().filter(|s| {
        s.name == "agent.batch" && s.attributes.get("outcome").is_some_and(|o| o == "acked")
    });
    for agent in batches {
        let Some(collector) = spans
            .iter()
            .find(|s| s.name == "collector.batch" && s.parent_span_id == agent.span_id)
        else {
            continue;
        };
        let children: Vec<Received> = spans
            .iter()
            .filter(|s| s.parent_span_id == collector.span_id)
            .cloned()
            .collect();
        let names: Vec<&str> = children.iter().map(|s| s.name.as_str()).collect();
        if ["collector.validate", "collector.write", "collector.ack"]
            .iter()
            .all(|n| names.contains(n))
        {
            return Some((agent.clone(), collector.clone(), children));
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_one_trace_from_the_agent_to_the_collectors_write_and_ack() {
    let dir = tempfile::tempdir().expect("tmp");
    certs(&dir.path().join("certs"), &["node-1"]);
    let (receiver, endpoint) = receiver().await;
    let env = otel_env(&endpoint);
    let (grpc, http) = (free_port(), free_port());
    let collector = start_collector(dir.path(), grpc, http, &env);
    wait_healthy(&collector, http).await;
    let agent = start_agent(dir.path(), grpc, &env);

    let (batch, ingest, children) = wait_for(
        "an agent batch span with the collector's spans under it",
        WAIT,
        || {
            let names: Vec<String> = receiver
                .spans
                .lock()
                .expect("lock")
                .iter()
                .map(|s| format!("{}:{}", s.service, s.name))
                .collect();
            format!(
                "spans: {names:?}\nagent:\n{}\ncollector:\n{}",
                agent.log(),
                collector.log()
            )
        },
        || traced_batch(&receiver.spans.lock().expect("lock")),
    )
    .await;

    assert_eq!(batch.service, "livehead-agent");
    assert_eq!(ingest.service, "livehead-collector");
    assert_eq!(batch.trace_id, ingest.trace_id, "one trace");
    assert_eq!(batch.attributes["records"], ingest.attributes["records"]);
    assert_eq!(batch.attributes["seq"], ingest.attributes["seq"]);
    assert_eq!(ingest.attributes["agent"], "node-1");
    assert_eq!(ingest.attributes["outcome"], "acked");
    for child in &children {
        assert_eq!(child.trace_id, batch.trace_id, "{child:?}");
        assert_eq!(child.service, "livehead-collector");
    }
    let write = children
        .iter()
        .find(|s| s.name == "collector.write")
        .expect("write span");
    assert_eq!(write.attributes["outcome"], "written");
    // The group write the batch was part of hangs under its write span.
    wait_for("the group write span", WAIT, String::new, || {
        let spans = receiver.spans.lock().expect("lock");
        spans
            .iter()
            .find(|s| s.name == "collector.group_write" && s.parent_span_id == write.span_id)
            .map(|g| assert_eq!(g.trace_id, batch.trace_id))
    })
    .await;
    // Rounds are traced too, each its own trace (a batch mixes rounds).
    wait_for(
        "a round span",
        WAIT,
        || format!("{:?}", receiver.spans.lock().expect("lock")),
        || {
            let spans = receiver.spans.lock().expect("lock");
            spans
                .iter()
                .find(|s| s.name == "agent.round" && s.service == "livehead-agent")
                .map(|s| assert_eq!(s.attributes["outcome"], "done", "{s:?}"))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_trace_endpoint_changes_nothing_for_ingest() {
    let dir = tempfile::tempdir().expect("tmp");
    certs(&dir.path().join("certs"), &["node-1"]);
    // Nobody listens there: every export fails at once.
    let env = otel_env(&format!("http://127.0.0.1:{}", free_port()));
    let (grpc, http) = (free_port(), free_port());
    let collector = start_collector(dir.path(), grpc, http, &env);
    wait_healthy(&collector, http).await;
    let agent = start_agent(dir.path(), grpc, &env);

    wait_for(
        "rows written while the trace endpoint is down",
        WAIT,
        || format!("agent:\n{}\ncollector:\n{}", agent.log(), collector.log()),
        || (rows_written(http) >= 3.0).then_some(()),
    )
    .await;
    let failed = "trace export failed";
    wait_for(
        "the export failure in the agent's log",
        WAIT,
        || agent.log(),
        || agent.log().contains(failed).then_some(()),
    )
    .await;
    // More rows, so more failed exports; still one line about them.
    let before = rows_written(http);
    wait_for(
        "more rows",
        WAIT,
        || agent.log(),
        || (rows_written(http) >= before + 2.0).then_some(()),
    )
    .await;
    assert_eq!(agent.log().matches(failed).count(), 1, "{}", agent.log());
    // The collector's spans are lost too, and counted.
    wait_for(
        "the collector's dropped spans counted",
        WAIT,
        || collector.log(),
        || {
            let (_, body) = http_get(loopback(http), "/metrics")?;
            (metric_sum(&body, "livehead_collector_trace_spans_dropped_total") > 0.0).then_some(())
        },
    )
    .await;
    assert!(
        collector.log().matches(failed).count() <= 1,
        "{}",
        collector.log()
    );
}
