//! The collector's configuration: a TOML file, overridden by flags and
//! environment (see the binary). Every field has a documented default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use livehead_common::roles::RoleToken;
use livehead_common::tls::TlsFiles;
use serde::Deserialize;

use crate::store::StorageConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CollectorConfig {
    /// gRPC ingest address. Default 0.0.0.0:7070.
    pub grpc_listen: SocketAddr,
    /// HTTP address: the old worker's API (`/health`, `/push`, `/last`,
    /// `/dump_last`), `/ready` and `/metrics`. Default 0.0.0.0:7080.
    pub http_listen: SocketAddr,
    /// Server certificate and key, and the CA agents' certificates must chain
    /// to. Required unless `insecure`.
    pub tls: Option<TlsFiles>,
    /// Plain-text gRPC without client certificates; agents then name
    /// themselves. For tests and trusted networks only. Default false.
    pub insecure: bool,
    /// Where rows go.
    pub storage: StorageConfig,
    /// Input limits.
    pub limits: Limits,
    /// The HTTP API's tokens and limits.
    pub api: ApiConfig,
    /// Who may subscribe to `WatchService` (the alerter), and its limits.
    pub watch: WatchConfig,
    /// Heartbeat checks: ping endpoints, ping keys, checks as code.
    pub heartbeats: HeartbeatsConfig,
    /// The browser dashboard under `/ui` (see `docs/dashboard.md`).
    pub dashboard: DashboardConfig,
    /// How often store upkeep (retention) runs. Default 10m.
    #[serde(with = "humantime_serde")]
    pub maintenance_interval: Duration,
    /// How often a background task reads the store to answer `/ready`
    /// (requests never touch the store). Default 5s.
    #[serde(with = "humantime_serde")]
    pub ready_interval: Duration,
    /// OpenTelemetry traces (`[telemetry]`): off unless an OTLP endpoint is
    /// set here or in `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub telemetry: livehead_common::traces::TelemetryConfig,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            grpc_listen: SocketAddr::from(([0, 0, 0, 0], 7070)),
            http_listen: SocketAddr::from(([0, 0, 0, 0], 7080)),
            tls: None,
            insecure: false,
            storage: StorageConfig::default(),
            limits: Limits::default(),
            api: ApiConfig::default(),
            watch: WatchConfig::default(),
            heartbeats: HeartbeatsConfig::default(),
            dashboard: DashboardConfig::default(),
            maintenance_interval: Duration::from_secs(600),
            ready_interval: Duration::from_secs(5),
            telemetry: livehead_common::traces::TelemetryConfig::default(),
        }
    }
}

/// Every bound on what an agent may send. A batch over `max_batch_records` or
/// a message over `max_message_bytes` is refused whole; a record over a field
/// limit is rejected alone and its batch's other records are stored.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Records in one batch, counted on the wire before the batch is decoded.
    /// Default 10,000.
    pub max_batch_records: usize,
    /// Decoded (uncompressed) size of one gRPC message, checked before it is
    /// decoded (and while it is decompressed). Agents learn it when their
    /// stream opens and split their batches to fit. Default 4 MiB (an agent's
    /// batch of 500 probes is ~100 KiB).
    pub max_message_bytes: usize,
    /// Bytes of a Location header kept. Default 2,048.
    pub max_location_bytes: usize,
    /// Bytes of a probe target. Default 512.
    pub max_target_bytes: usize,
    /// Bytes of a name in a sample: mountpoint, device, filesystem type,
    /// interface, pod, cgroup path, systemd unit and states, Unix user.
    /// Names are never empty (sites follow the probe sites' rule instead).
    /// Default 512.
    pub max_name_bytes: usize,
    /// Bytes of free text in a record: an alert's summary, a failed
    /// delivery's error, a probe's `cert_error` and `content_failure`.
    /// Default 2,048.
    pub max_text_bytes: usize,
    /// Bytes of a log in a record: a watchdog step's output tail, a heartbeat
    /// ping's body. Any characters (logs hold newlines and escapes). Default
    /// 10,240 (10 KB, what the agent and `livehead run` keep).
    pub max_log_bytes: usize,
    /// Latest a timestamp may be ahead of the collector's clock. Default 5m.
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
    /// Oldest a timestamp may be. Default 30d (a spool never holds more).
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Largest latency accepted (any of the three timings). Default 10m.
    #[serde(with = "humantime_serde")]
    pub max_latency: Duration,
    /// Rows accepted from all streams and not yet written (the group being
    /// written included); streams stop reading while it is full. Bounds the
    /// collector's memory (~0.5 KiB per row) and the size of one store write.
    /// Default 200,000.
    pub max_queued_rows: usize,
    /// Memory of the rows counted by `max_queued_rows` (strings included), so
    /// that rows carrying long locations and targets cannot take ~6× more
    /// memory than the row bound suggests. Default 128 MiB.
    pub max_queued_bytes: usize,
    /// Batches of one stream being written before its next batch is read.
    /// Above the agent's `max_in_flight` (32). Default 64.
    pub max_stream_batches: usize,
    /// Agent streams open at once; one more is refused with `Unavailable` (the
    /// agent retries with backoff). With `max_message_bytes`, bounds what
    /// streams buffer of messages not yet whole: at most
    /// `max_streams × max_message_bytes`. Default 512.
    pub max_streams: usize,
    /// Connections open at once on each port (`grpc_listen`, `http_listen`);
    /// further clients wait in the kernel's backlog until one closes. Each
    /// costs a file descriptor: keep the process's `nofile` limit above twice
    /// this plus the store's connections. Default 1,024.
    pub max_connections: usize,
    /// HTTP: time to receive a request's headers, counted from the
    /// connection's start or the previous answer, so it is also how long an
    /// idle keep-alive connection stays open. Default 10s.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// HTTP: time to receive a `/push` body once its headers are in; a slower
    /// body gets 408. Default 30s.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// gRPC: time for a client to complete the TLS handshake (with
    /// `insecure`: to send its first bytes). Default 10s.
    #[serde(with = "humantime_serde")]
    pub tls_handshake_timeout: Duration,
    /// gRPC: on shutdown, time the open streams (agents, the alerter) get to
    /// finish before they are closed; a client resends whatever was not
    /// acknowledged. Default 5s.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// gRPC: HTTP/2 PING (and TCP keepalive) interval on each connection, so
    /// a peer that vanished is noticed. Default 30s.
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// gRPC: a connection whose PING is not answered within this is closed.
    /// Default 10s.
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// gRPC: concurrent streams on one connection (an agent opens one).
    /// Default 16.
    pub max_streams_per_connection: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_batch_records: 10_000,
            max_message_bytes: 4 << 20,
            max_location_bytes: 2048,
            max_target_bytes: 512,
            max_name_bytes: 512,
            max_text_bytes: 2048,
            max_log_bytes: 10_240,
            max_clock_skew: Duration::from_secs(300),
            max_age: Duration::from_secs(30 * 86_400),
            max_latency: Duration::from_secs(600),
            max_queued_rows: 200_000,
            max_queued_bytes: 128 << 20,
            max_stream_batches: 64,
            max_streams: 512,
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            tls_handshake_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            max_streams_per_connection: 16,
        }
    }
}

/// `WatchService`: the stream of accepted batches the alerter subscribes to
/// on the gRPC port (see `crate::watch`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WatchConfig {
    /// Identities that may subscribe: client certificate names (the first DNS
    /// name, else the common name, as agents are named). `"*"` allows any
    /// certificate of the CA, and is required with `insecure` (no
    /// certificates, so no identities). Anyone else is refused with
    /// PERMISSION_DENIED. Default none: nobody may subscribe.
    pub allow: Vec<String>,
    /// Subscribers connected at once; one more is refused with
    /// RESOURCE_EXHAUSTED. Default 16.
    pub max_subscribers: usize,
    /// Accepted batches kept for a subscriber that falls behind (shared by
    /// all subscribers: each may lag this many batches behind the newest);
    /// past it its stream ends with ABORTED and it resynchronises from a new
    /// snapshot. Default 4,096.
    pub buffer_batches: usize,
    /// Records in one snapshot message (`SnapshotChunk`), so that one
    /// message stays far below gRPC's 4 MiB default. Default 1,000.
    pub snapshot_chunk_records: usize,
    /// The snapshot holds rows newer than this: a site, node or thing that
    /// last reported earlier is left out. Default 24h.
    #[serde(with = "humantime_serde")]
    pub snapshot_max_age: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            max_subscribers: 16,
            buffer_batches: 4096,
            snapshot_chunk_records: 1000,
            snapshot_max_age: Duration::from_secs(86_400),
        }
    }
}

/// The HTTP API: the old worker's routes and `/stats`, with their tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Tokens `POST /push` accepts (`Authorization: Bearer <token>`), stored as
    /// their SHA-256. No token: every push is refused. Default none.
    pub push_tokens: Vec<PushToken>,
    /// Role tokens for reading: `/stats/*` always, `/last` and `/dump_last`
    /// when `open_reads` is false. They never push (`/push` answers them
    /// 403). Default none (`/stats` then refuses every request).
    pub tokens: Vec<RoleToken>,
    /// Whether `/last` and `/dump_last` answer without a token, as the old
    /// worker did. When false they need a role token and answer only its
    /// sites. Default true.
    pub open_reads: bool,
    /// Largest `/push` body in bytes; larger ones get 413. Default 4 MiB
    /// (about 30,000 of the old script's records). A push also holds at most
    /// `limits.max_batch_records` records.
    pub max_push_bytes: usize,
    /// Deprecated, kept for existing configurations: true is `open_reads =
    /// false`, with push tokens reading `/last` and `/dump_last` (every
    /// site) besides role tokens, as before role tokens existed. Default false.
    pub read_requires_token: bool,
    /// Bytes of `/push` bodies being read and parsed at once, all requests
    /// together (a body counts its Content-Length, or `max_push_bytes` when
    /// chunked); a push that does not fit gets 503 with `Retry-After`. Bounds
    /// the memory pushes take. At least `max_push_bytes`. Default 16 MiB.
    pub max_push_bytes_in_flight: usize,
    /// `/stats` "latest" reads show rows newer than this, so a node, pod,
    /// filesystem or service that went away drops out. About 30 of the
    /// agent's default 10 s samples. Default 5m.
    #[serde(with = "humantime_serde")]
    pub stats_fresh: Duration,
    /// The same for site disk usage, which agents walk far less often
    /// (default every 10 min). Default 30m.
    #[serde(with = "humantime_serde")]
    pub stats_site_disk_fresh: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            push_tokens: Vec::new(),
            tokens: Vec::new(),
            open_reads: true,
            max_push_bytes: 4 << 20,
            read_requires_token: false,
            max_push_bytes_in_flight: 16 << 20,
            stats_fresh: Duration::from_secs(300),
            stats_site_disk_fresh: Duration::from_secs(1800),
        }
    }
}

/// One accepted push token. Its name is stored in the `agent` column of the
/// rows it pushes (as `push:<name>`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushToken {
    /// Who uses the token, e.g. `pods-eu`.
    pub name: String,
    /// SHA-256 of the token, 64 hex digits (`printf %s "$TOKEN" | sha256sum`).
    pub sha256: String,
}

/// Heartbeat checks (`crate::heartbeats`): the `/ping/...` endpoints, the
/// management API's limits, ping keys and checks declared as code.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeartbeatsConfig {
    /// Bytes of a ping's body kept as the run's log (lossily UTF-8); the
    /// rest is counted in `body_bytes` only. Default 10,240; at most
    /// `limits.max_log_bytes`.
    pub body_limit: usize,
    /// Bytes of a ping's body read at all; a longer body is cut there (the
    /// ping is stored, `body_bytes` then says this many) and the connection
    /// is not read further. Default 1 MiB.
    pub max_body_bytes: usize,
    /// Pings one check may send per minute, replenished evenly; over it a
    /// ping is answered 429 and counted (`heartbeat_pings_total{outcome =
    /// "limited"}`). Default 60.
    pub max_pings_per_check: u32,
    /// Pings one check may send at once above that rate. Default 10.
    pub ping_burst: u32,
    /// Longest a replica's cache of checks (what a ping looks its check up
    /// in) goes without reading the store; a ping for a check the cache does
    /// not hold reads the store at most once a second. Default 5s.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// Ping keys: project name → SHA-256 (hex) of its key, which
    /// `/ping/<ping-key>/<slug>` carries (`printf %s "$KEY" | sha256sum`).
    /// Default none.
    pub ping_keys: BTreeMap<String, String>,
    /// A file of more ping keys, one `project=sha256` a line, `#` comments.
    /// Default unset.
    pub ping_keys_file: Option<PathBuf>,
    /// Checks declared as code (TOML `[[checks]]`), applied at start.
    /// Default unset.
    pub checks_file: Option<PathBuf>,
    /// Most pings `GET /api/v1/checks/<uuid>/pings` answers (its `limit`).
    /// Default 1,000.
    pub max_list_pings: u32,
}

impl Default for HeartbeatsConfig {
    fn default() -> Self {
        Self {
            body_limit: 10_240,
            max_body_bytes: 1 << 20,
            max_pings_per_check: 60,
            ping_burst: 10,
            cache_ttl: Duration::from_secs(5),
            ping_keys: BTreeMap::new(),
            ping_keys_file: None,
            checks_file: None,
            max_list_pings: 1000,
        }
    }
}

/// The browser dashboard (`/ui`, `crate::dashboard`): sessions signed in
/// with the role tokens of `api.tokens`, its JSON, its live stream, and where
/// its alert actions go.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DashboardConfig {
    /// Serve `/ui` and `/ui/api/*` (and redirect `/` there). Default true.
    pub enabled: bool,
    /// The key session cookies are signed with: a file of at least 32 bytes
    /// (`head -c 64 /dev/urandom > session.key`), the same on every replica
    /// behind one address. Unset: a random key per process, so sessions end
    /// when the collector restarts. Default unset.
    pub session_key_file: Option<PathBuf>,
    /// How long a sign-in lasts; the page then asks for the token again.
    /// Default 12h.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// Mark the session cookie `Secure`: set it when the dashboard is reached
    /// over https (a TLS proxy in front of `http_listen`), so the browser
    /// never sends the cookie in clear. Default false.
    pub secure_cookie: bool,
    /// The alerter's API (`http://host:port`) acknowledge, resolve and
    /// silence are forwarded to. Unset: those actions answer 409. Default
    /// unset (`livehead up` sets its own alerter).
    pub alerter_url: Option<String>,
    /// A file holding an admin token of the alerter's `api.tokens` (one
    /// line), sent with forwarded actions. Default unset.
    pub alerter_token_file: Option<PathBuf>,
    /// Longest a forwarded alert action may take before the page gets 502.
    /// Default 5s.
    #[serde(with = "humantime_serde")]
    pub alerter_timeout: Duration,
    /// Events queued for one live stream (`/ui/api/live`) that is not reading
    /// them; past it the stream drops events and sends `resync`, so a slow
    /// browser costs at most this many events of memory. Default 1,024.
    pub live_buffer: usize,
    /// Live streams open at once (all sessions); one more is answered 503.
    /// Default 64.
    pub max_live_streams: usize,
    /// Sites whose newest probe is older than this are left out of the
    /// overview and node pages (a site no agent probes any more). Default 24h.
    #[serde(with = "humantime_serde")]
    pub site_max_age: Duration,
    /// Newest alert events read to list alerts and their states (one read,
    /// then the newest state of each alert): an alert whose last change is
    /// older than this many events is not listed. Default 10,000.
    pub max_alert_events: u32,
    /// Newest probes of one site read for its page (status strip, latency,
    /// redirects), before they are reduced to at most 200 points. A week of
    /// one probe a minute is 10,080. Default 20,000.
    pub max_site_probes: u32,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            session_key_file: None,
            session_ttl: Duration::from_secs(12 * 3600),
            secure_cookie: false,
            alerter_url: None,
            alerter_token_file: None,
            alerter_timeout: Duration::from_secs(5),
            live_buffer: 1024,
            max_live_streams: 64,
            site_max_age: Duration::from_secs(86_400),
            max_alert_events: 10_000,
            max_site_probes: 20_000,
        }
    }
}
