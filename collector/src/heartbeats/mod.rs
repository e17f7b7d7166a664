//! Heartbeat checks on the collector's HTTP port: the collector stores
//! checks and pings; the alerter decides lateness (from the watch stream).
//!
//! - Ping endpoints, Healthchecks' URL shapes, no auth (the UUID or ping key
//!   is the secret), HEAD, GET or POST ([`ping`]): `/ping/<uuid>`,
//!   `/ping/<uuid>/start`, `/fail`, `/log`, `/<exit-status>`, and the same
//!   under `/ping/<ping-key>/<slug>` (`?create=1` creates the check),
//!   `?rid=<uuid>`. Text answers: `OK`, `Created`, `not found`, 400 naming
//!   what is wrong, 429 over `heartbeats.max_pings_per_check`.
//! - The management API under `/api/v1/checks` ([`api`]), with the API's
//!   role tokens.
//! - Checks as code (`heartbeats.checks_file`, [`code`]), applied at start.
//!
//! Every check version and ping is a batch of [`HEARTBEAT_WRITER`] through
//! the group commit, answered once durably written, like `/push`.

pub mod api;
pub mod code;
mod directory;
pub mod keys;
pub mod path;
pub mod ping;
mod view;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::Router;
use livehead_heartbeat::CheckSpec;
use livehead_proto::v1::{HeartbeatCheck, HeartbeatPing, PingKind};

use crate::access::Access;
use crate::config::{HeartbeatsConfig, Limits};
use crate::group_commit::{GroupCommit, QueuedBatch};
use crate::metrics::CollectorMetrics;
use crate::store::sample_tables::HEARTBEAT_WRITER;
use crate::store::samples::{HeartbeatCheckRow, HeartbeatPingRow};
use crate::store::{Rows, Store, StoreError, WriteOutcome};
use crate::validate::Invalid;
use crate::validate::samples::Ctx;

pub use code::{CodeError, apply_checks_file};
pub use directory::Directory;
pub use keys::{KeysError, PingKeys};

/// Now in unix ms: the wall clock, or a fixed one in tests.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The wall clock.
pub fn wall_clock() -> Clock {
    Arc::new(livehead_common::clock::unix_ms)
}

/// What the heartbeat handlers share.
pub struct HeartbeatsState<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for HeartbeatsState<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<S> {
    store: Arc<S>,
    writer: GroupCommit,
    access: Arc<Access>,
    metrics: CollectorMetrics,
    limits: Limits,
    config: HeartbeatsConfig,
    keys: PingKeys,
    directory: Arc<Directory>,
    limiter: ping::Limiter,
    clock: Clock,
    /// Held from reading the checks to writing a version, so two API writes
    /// on this replica cannot give two checks one name.
    writing: tokio::sync::Mutex<()>,
}

/// Everything the module needs from the collector.
pub struct Parts<S> {
    pub store: Arc<S>,
    pub writer: GroupCommit,
    pub access: Arc<Access>,
    pub metrics: CollectorMetrics,
    pub limits: Limits,
    pub config: HeartbeatsConfig,
    pub keys: PingKeys,
    pub clock: Clock,
}

impl<S: Store> HeartbeatsState<S> {
    pub fn new(parts: Parts<S>) -> Self {
        let limiter = ping::Limiter::new(&parts.config);
        Self {
            inner: Arc::new(Inner {
                directory: Directory::new(parts.config.cache_ttl),
                store: parts.store,
                writer: parts.writer,
                access: parts.access,
                metrics: parts.metrics,
                limits: parts.limits,
                config: parts.config,
                keys: parts.keys,
                limiter,
                clock: parts.clock,
                writing: tokio::sync::Mutex::new(()),
            }),
        }
    }

    fn now(&self) -> u64 {
        (self.inner.clock)()
    }

    fn ctx(&self, now_ms: u64) -> Ctx<'_> {
        Ctx {
            agent: HEARTBEAT_WRITER,
            now_ms,
            limits: &self.inner.limits,
        }
    }

    /// Writes `rows` through the group commit and waits until they are
    /// durable; checks written are remembered by this replica's cache.
    async fn write(&self, rows: Rows) -> Result<(), WriteError> {
        let checks = rows.heartbeat_checks.clone();
        // A random 63-bit sequence number, as /push uses: every write is new.
        let seq = rand::random::<u64>() >> 1;
        let queued = QueuedBatch {
            agent: HEARTBEAT_WRITER.to_owned(),
            seq,
            rows,
            span: tracing::Span::none(),
        };
        let answer = self
            .inner
            .writer
            .submit(queued)
            .await
            .map_err(|_| WriteError::Stopped)?;
        match answer.await.map_err(|_| WriteError::Stopped)? {
            Ok(WriteOutcome::Written { .. }) => {}
            Ok(WriteOutcome::Duplicate | WriteOutcome::Conflict) => {
                tracing::warn!(seq, "heartbeat write taken for a replay; not stored");
            }
            Err(error) => return Err(WriteError::Store(error)),
        }
        for check in checks {
            self.inner.directory.remember(check);
        }
        Ok(())
    }
}

/// The routes: pings and the management API.
pub fn router<S: Store>(state: HeartbeatsState<S>) -> Router {
    ping::router(state.clone()).merge(api::router(state))
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("the writer stopped (the collector is shutting down)")]
    Stopped,
    #[error("storage unavailable: {0}")]
    Store(Arc<StoreError>),
}

/// A field of a check refused: the record's field without its
/// `heartbeat_check.` prefix, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl From<Invalid> for FieldError {
    fn from(e: Invalid) -> Self {
        let field = e.field.strip_prefix("heartbeat_check.").unwrap_or(e.field);
        Self {
            field: field.to_owned(),
            reason: e.reason,
        }
    }
}

/// A check version as the store takes it: the record validator's rules,
/// then the schedule (a cron expression, a zone, the period's and grace's
/// bounds) as the heartbeat crate reads it.
pub fn validate_check(
    check: &HeartbeatCheck,
    ctx: &Ctx<'_>,
) -> Result<HeartbeatCheckRow, FieldError> {
    let row = crate::validate::heartbeats::check_check(check, ctx)?;
    CheckSpec::from_record(check).map_err(|e| {
        let message = e.to_string();
        let reason = message
            .split_once(": ")
            .map_or(message.as_str(), |(_, r)| r)
            .to_owned();
        FieldError {
            field: e.field().to_owned(),
            reason,
        }
    })?;
    Ok(row)
}

/// A stored check as its record (what the heartbeat crate reads).
pub fn check_record(row: &HeartbeatCheckRow) -> HeartbeatCheck {
    HeartbeatCheck {
        ts_ms: row.ts,
        check_id: row.check_id.clone(),
        project: row.project.clone(),
        slug: row.slug.clone(),
        name: row.name.clone(),
        tags: row.tags.clone(),
        period_s: row.period_s,
        cron: row.cron.clone(),
        tz: row.tz.clone(),
        grace_s: row.grace_s,
        paused: row.paused,
        deleted: row.deleted,
        source: row.source.clone(),
        actor: row.actor.clone(),
    }
}

/// A stored ping as its record.
pub fn ping_record(row: &HeartbeatPingRow) -> HeartbeatPing {
    let kind = match row.kind.as_str() {
        "success" => PingKind::Success,
        "start" => PingKind::Start,
        "fail" => PingKind::Fail,
        "log" => PingKind::Log,
        "exit" => PingKind::Exit,
        _ => PingKind::Unspecified,
    };
    HeartbeatPing {
        ts_ms: row.ts,
        check_id: row.check_id.clone(),
        kind: kind as i32,
        exit_status: row.exit_status,
        rid: row.rid.clone(),
        method: row.method.clone(),
        remote: row.remote.clone(),
        user_agent: row.user_agent.clone(),
        body: row.body.clone(),
        body_bytes: row.body_bytes,
        duration_ms: row.duration_ms,
    }
}

/// The next version of `current`, written by `source`/`actor` at `now_ms`.
pub fn next_version(
    current: &HeartbeatCheckRow,
    now_ms: u64,
    source: &str,
    actor: &str,
) -> HeartbeatCheck {
    HeartbeatCheck {
        // A version must sort after the one it replaces, even when the
        // clocks of two replicas disagree by a millisecond or two.
        ts_ms: now_ms.max(current.ts + 1),
        source: source.to_owned(),
        actor: actor.to_owned(),
        ..check_record(current)
    }
}

/// The source a pause, resume or un-pausing ping writes: a check declared as
/// code stays the file's (so it is still removed with its declaration).
fn keep_config(current: &HeartbeatCheckRow, source: &'static str) -> &'static str {
    if current.source == "config" {
        "config"
    } else {
        source
    }
}
