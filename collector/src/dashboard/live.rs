//! `/ui/api/live`: Server-Sent Events fed from the one accept point
//! ([`GroupCommit::subscribe`]), filtered by the session's sites before
//! anything is queued. Each stream has a task that turns written batches
//! into events and a queue of at most `dashboard.live_buffer` events between
//! it and the connection; when the browser does not keep up (or the shared
//! broadcast overtakes the task) events are dropped and one `resync` event
//! tells the page to refetch. The task ends with the connection, with the
//! collector's shutdown, when the session expires, or when the session's
//! token leaves the config.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::Event;
use livehead_common::Shutdown;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{OwnedSemaphorePermit, broadcast, mpsc};

use super::view::{self, SiteRow};
use crate::access::{Access, Caller};
use crate::group_commit::Accepted;

/// What a page subscribes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Channel {
    Server,
    Site,
    Alerts,
}

impl Channel {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "server" => Some(Self::Server),
            "site" => Some(Self::Site),
            "alerts" => Some(Self::Alerts),
            _ => None,
        }
    }
}

/// `channels=server,site,alerts` (any subset, default all); the unknown name
/// is the error.
pub fn channels(value: Option<&str>) -> Result<BTreeSet<Channel>, String> {
    let Some(value) = value else {
        return Ok([Channel::Server, Channel::Site, Channel::Alerts].into());
    };
    value
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| {
            Channel::parse(name)
                .ok_or_else(|| format!("channels: unknown channel {name:?} (server, site, alerts)"))
        })
        .collect()
}

/// One event before it gets its id.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveEvent {
    pub name: &'static str,
    pub data: Value,
}

/// The events of one written batch that `caller` may see on `channels`.
/// Node samples are admins' (as `/stats/server`); alerts of no site too.
pub fn events(
    accepted: &Accepted,
    caller: &Caller<'_>,
    channels: &BTreeSet<Channel>,
) -> Vec<LiveEvent> {
    let rows = &accepted.rows;
    let mut out = Vec::new();
    if channels.contains(&Channel::Site) {
        out.extend(
            rows.probes
                .iter()
                .filter(|p| caller.may_read(&p.site))
                .map(|p| LiveEvent {
                    name: "site",
                    data: serde_json::to_value(SiteRow::from(p)).unwrap_or(Value::Null),
                }),
        );
    }
    if channels.contains(&Channel::Server) && caller.is_admin() {
        out.extend(rows.nodes.iter().map(|n| LiveEvent {
            name: "server",
            data: view::server(n),
        }));
    }
    if channels.contains(&Channel::Alerts) {
        let admin = caller.is_admin();
        out.extend(
            rows.alerts
                .iter()
                .filter(|a| view::alert_visible(&a.site, admin, |s| caller.may_read(s)))
                .map(|a| LiveEvent {
                    name: "alert",
                    data: serde_json::to_value(view::AlertRow::from(a)).unwrap_or(Value::Null),
                }),
        );
        out.extend(rows.heartbeat_states.iter().map(|h| LiveEvent {
            name: "heartbeat",
            data: view::heartbeat(h),
        }));
        if admin {
            out.extend(rows.watchdog.iter().map(|w| LiveEvent {
                name: "watchdog",
                data: serde_json::to_value(w).unwrap_or(Value::Null),
            }));
        }
    }
    out
}

/// What one stream's task needs.
pub struct Feed {
    pub access: Arc<Access>,
    pub token: String,
    pub channels: BTreeSet<Channel>,
    pub accepted: broadcast::Receiver<Arc<Accepted>>,
    pub buffer: usize,
    pub shutdown: Shutdown,
    /// When the session expires: the stream ends then.
    pub expires_ms: u64,
    /// Held while the stream lives (`dashboard.max_live_streams`).
    pub permit: OwnedSemaphorePermit,
}

/// Starts the feed's task; the receiver is the stream's events, ending when
/// the task does.
pub fn start(feed: Feed) -> mpsc::Receiver<Result<Event, Infallible>> {
    let (tx, rx) = mpsc::channel(feed.buffer.max(1));
    tokio::spawn(run(feed, tx));
    rx
}

type Sender = mpsc::Sender<Result<Event, Infallible>>;

async fn run(mut feed: Feed, tx: Sender) {
    let _permit = feed.permit;
    let mut queue = Queue {
        tx,
        next_id: 0,
        lagged: false,
    };
    let left = feed
        .expires_ms
        .saturating_sub(livehead_common::clock::unix_ms());
    let expiry = tokio::time::sleep(std::time::Duration::from_millis(left));
    tokio::pin!(expiry);
    loop {
        let accepted = tokio::select! {
            received = feed.accepted.recv() => received,
            () = queue.tx.closed() => break,
            () = feed.shutdown.cancelled() => break,
            () = &mut expiry => break,
        };
        let batch = match accepted {
            Ok(batch) => batch,
            Err(RecvError::Lagged(missed)) => {
                tracing::debug!(token = %feed.token, missed, "dashboard live stream lagged");
                queue.lagged = true;
                queue.flush_resync();
                continue;
            }
            Err(RecvError::Closed) => break,
        };
        let Some(caller) = feed.access.named(&feed.token) else {
            tracing::info!(token = %feed.token, "dashboard live stream ended: token no longer configured");
            break;
        };
        for event in events(&batch, &caller, &feed.channels) {
            if !queue.push(event) {
                break;
            }
        }
    }
}

/// The stream's side of its bounded queue.
struct Queue {
    tx: Sender,
    next_id: u64,
    /// Events were dropped since the last `resync` was queued.
    lagged: bool,
}

impl Queue {
    fn event(&mut self, name: &str, data: &Value) -> Event {
        self.next_id += 1;
        Event::default()
            .id(self.next_id.to_string())
            .event(name)
            .data(data.to_string())
    }

    /// Queues `resync` if events were dropped and there is room now.
    fn flush_resync(&mut self) {
        if !self.lagged {
            return;
        }
        let event = self.event("resync", &json!({ "reason": "events dropped" }));
        if self.tx.try_send(Ok(event)).is_ok() {
            self.lagged = false;
        }
    }

    /// Queues `event` (after a pending `resync`), dropping it when the queue
    /// is full; false once the stream is gone.
    fn push(&mut self, event: LiveEvent) -> bool {
        self.flush_resync();
        if self.lagged {
            return !self.tx.is_closed();
        }
        let sse = self.event(event.name, &event.data);
        match self.tx.try_send(Ok(sse)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.lagged = true;
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_parse_and_refuse_unknown_names() {
        assert_eq!(channels(None).expect("all").len(), 3);
        assert_eq!(
            channels(Some("site,alerts")).expect("two"),
            [Channel::Site, Channel::Alerts].into()
        );
        assert!(
            channels(Some("site,bogus"))
                .expect_err("bogus")
                .contains("bogus")
        );
    }

    #[tokio::test]
    async fn a_full_queue_drops_events_then_sends_one_resync() {
        let (tx, mut rx) = mpsc::channel(2);
        let mut queue = Queue {
            tx,
            next_id: 0,
            lagged: false,
        };
        let event = || LiveEvent {
            name: "site",
            data: json!({}),
        };
        for _ in 0..5 {
            assert!(queue.push(event()));
        }
        assert!(queue.lagged);
        assert!(rx.recv().await.is_some());
        assert!(rx.recv().await.is_some());
        // Room again: the next push first queues the resync.
        assert!(queue.push(event()));
        assert!(!queue.lagged);
        let mut count = 0;
        while rx.try_recv().is_ok() {
            count += 1;
        }
        assert_eq!(count, 2, "resync, then the event");
    }
}
