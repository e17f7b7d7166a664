//! Delivery: one bounded queue and one task per receiver, so a slow or
//! failing receiver delays only itself and the caller never waits.
//!
//! A task sends its queue in order (PagerDuty's trigger must reach it before
//! the resolve), one notification at a time: each request has a timeout;
//! transient failures (network errors, 408, 429, 5xx) are retried up to
//! `max_attempts` with exponential backoff and jitter, or after the wait
//! the server asked for; requests are paced by `min_interval`.

use std::collections::HashMap;
use std::time::Duration;

use prometheus::{IntCounterVec, Opts, Registry};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

use super::{Notification, Receiver, ReceiverError, Verdict};

/// Counters by receiver name (the `receiver` label).
#[derive(Clone, Debug)]
pub struct DeliveryMetrics {
    /// Notifications the receiver accepted.
    pub sent: IntCounterVec,
    /// Notifications given up on: rejected, gone, or out of attempts.
    pub failed: IntCounterVec,
    /// Attempts after the first.
    pub retried: IntCounterVec,
    /// Notifications dropped before any attempt: queue full or stopped.
    pub dropped: IntCounterVec,
}

impl DeliveryMetrics {
    /// Creates the counters and registers them on `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let counter = |name: &str, help: &str| -> Result<IntCounterVec, prometheus::Error> {
            let counter = IntCounterVec::new(Opts::new(name, help), &["receiver"])?;
            registry.register(Box::new(counter.clone()))?;
            Ok(counter)
        };
        Ok(DeliveryMetrics {
            sent: counter("notifications_sent_total", "Notifications delivered")?,
            failed: counter(
                "notifications_failed_total",
                "Notifications not delivered: rejected, webhook gone or out of attempts",
            )?,
            retried: counter(
                "notifications_retried_total",
                "Delivery attempts after the first",
            )?,
            dropped: counter(
                "notifications_dropped_total",
                "Notifications dropped before any attempt: queue full or delivery stopped",
            )?,
        })
    }
}

/// The outcome of one notification at one receiver, for callers that
/// record deliveries (the alerter's store).
#[derive(Debug)]
pub struct DeliveryReport {
    pub receiver: String,
    pub id: String,
    /// Requests made, 0 when it could not be encoded.
    pub attempts: u32,
    pub result: Result<(), ReceiverError>,
    /// Each request made, in order (`attempts` of them), so every attempt
    /// can be recorded.
    pub tries: Vec<Attempt>,
}

/// One request of a delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// When the answer (or the failure) came, unix ms.
    pub at_ms: u64,
    /// HTTP status answered, 0 when there was no answer.
    pub http_status: u16,
    /// Why it did not succeed (never holding the URL); `None` when sent.
    pub error: Option<String>,
}

/// Hands notifications to the receivers' queues.
pub struct Dispatcher {
    queues: HashMap<String, Queue>,
    metrics: DeliveryMetrics,
    tasks: JoinSet<()>,
}

/// A notification and the span of the evaluation that fired it (its
/// delivery span's parent).
type Queued = (Notification, tracing::Span);

struct Queue {
    sender: mpsc::Sender<Queued>,
    capacity: usize,
}

/// What a receiver's task needs, shared by its attempts.
struct Worker {
    receiver: Receiver,
    client: reqwest::Client,
    metrics: DeliveryMetrics,
    reports: Option<mpsc::Sender<DeliveryReport>>,
    last_request: Option<Instant>,
}

impl Dispatcher {
    /// Validates the receivers and starts one task each; must run inside a
    /// Tokio runtime. With `reports`, every outcome is also sent there
    /// (dropped, and logged, when that channel is full: reporting must not
    /// stall delivery).
    pub fn start(
        receivers: Vec<Receiver>,
        metrics: DeliveryMetrics,
        reports: Option<mpsc::Sender<DeliveryReport>>,
    ) -> Result<Self, ReceiverError> {
        let mut names = std::collections::HashSet::new();
        for receiver in &receivers {
            receiver.validate()?;
            if !names.insert(receiver.name()) {
                return Err(ReceiverError::Config {
                    receiver: receiver.name().to_owned(),
                    reason: "two receivers have this name".to_owned(),
                });
            }
        }
        let client = http_client()?;
        let mut queues = HashMap::new();
        let mut tasks = JoinSet::new();
        for receiver in receivers {
            let name = receiver.name().to_owned();
            let capacity = receiver.delivery().queue;
            let (sender, rx) = mpsc::channel(capacity);
            let worker = Worker {
                receiver,
                client: client.clone(),
                metrics: metrics.clone(),
                reports: reports.clone(),
                last_request: None,
            };
            tasks.spawn(worker.run(rx));
            queues.insert(name, Queue { sender, capacity });
        }
        Ok(Dispatcher {
            queues,
            metrics,
            tasks,
        })
    }

    /// Queues `notification` for `receiver` without waiting. A full queue
    /// drops it (counted, logged, and returned as the error). Its delivery
    /// span is a child of the span current here.
    pub fn notify(&self, receiver: &str, notification: Notification) -> Result<(), ReceiverError> {
        let Some(queue) = self.queues.get(receiver) else {
            return Err(ReceiverError::Unknown {
                receiver: receiver.to_owned(),
            });
        };
        let id = notification.id.clone();
        let err = match queue
            .sender
            .try_send((notification, tracing::Span::current()))
        {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => ReceiverError::QueueFull {
                receiver: receiver.to_owned(),
                capacity: queue.capacity,
                id,
            },
            Err(mpsc::error::TrySendError::Closed(_)) => ReceiverError::Closed {
                receiver: receiver.to_owned(),
                id,
            },
        };
        self.metrics.dropped.with_label_values(&[receiver]).inc();
        tracing::warn!(receiver = %receiver, error = %err, "notification dropped");
        Err(err)
    }

    /// Stops taking notifications and waits until every queue is drained
    /// (each notification delivered or given up on).
    pub async fn close(mut self) {
        self.queues.clear();
        while let Some(joined) = self.tasks.join_next().await {
            if let Err(err) = joined {
                tracing::error!(error = %err, "a receiver's delivery task failed");
            }
        }
    }
}

fn http_client() -> Result<reqwest::Client, ReceiverError> {
    // The workspace's one crypto provider; `Err` means one is installed
    // already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        // A webhook answering with a redirect would get our body (and its
        // signature) sent somewhere nobody configured.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|err| ReceiverError::Config {
            receiver: "*".to_owned(),
            reason: format!("HTTP client: {}", err.without_url()),
        })
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::Receiver<Queued>) {
        while let Some((notification, parent)) = rx.recv().await {
            let span = tracing::info_span!(parent: &parent, "alerter.notify",
                receiver = %self.receiver.name(), id = %notification.id, rule = %notification.rule,
                status = ?notification.status, attempts = tracing::field::Empty,
                outcome = tracing::field::Empty);
            drop(parent);
            let (tries, result) = self.deliver(&notification).instrument(span.clone()).await;
            let attempts = u32::try_from(tries.len()).unwrap_or(u32::MAX);
            span.record("attempts", attempts);
            span.record(
                "outcome",
                if result.is_ok() {
                    "delivered"
                } else {
                    "failed"
                },
            );
            let name = self.receiver.name();
            match &result {
                Ok(()) => self.metrics.sent.with_label_values(&[name]).inc(),
                Err(err) => {
                    self.metrics.failed.with_label_values(&[name]).inc();
                    if matches!(err, ReceiverError::Gone { .. }) {
                        tracing::error!(receiver = %name, id = %notification.id, error = %err, "receiver's webhook deleted");
                    } else {
                        tracing::warn!(receiver = %name, id = %notification.id, attempts, error = %err, "notification not delivered");
                    }
                }
            }
            self.report(DeliveryReport {
                receiver: name.to_owned(),
                id: notification.id,
                attempts,
                result,
                tries,
            });
        }
    }

    fn report(&self, report: DeliveryReport) {
        if let Some(reports) = &self.reports {
            if let Err(err) = reports.try_send(report) {
                tracing::warn!(receiver = %self.receiver.name(), error = %err, "delivery report dropped");
            }
        }
    }

    /// Tries until delivered, refused, or out of attempts; returns the
    /// requests made.
    async fn deliver(&mut self, n: &Notification) -> (Vec<Attempt>, Result<(), ReceiverError>) {
        let outgoing = match self.receiver.encode(n) {
            Ok(outgoing) => outgoing,
            Err(err) => return (Vec::new(), Err(err)),
        };
        let mut tries = Vec::new();
        let name = self.receiver.name().to_owned();
        let policy = self.receiver.delivery().clone();
        let mut last = String::new();
        for attempt in 1..=policy.max_attempts {
            self.pace().await;
            let (verdict, status, body) = self.attempt(&outgoing, policy.timeout).await;
            tracing::debug!(receiver = %name, id = %n.id, attempt, status, "delivery attempt");
            tries.push(Attempt {
                at_ms: super::now_ms(),
                http_status: status,
                error: (verdict != Verdict::Delivered).then(|| {
                    if status == 0 {
                        body.clone()
                    } else {
                        format!("HTTP {status}: {body}")
                    }
                }),
            });
            let wait = match verdict {
                Verdict::Delivered => return (tries, Ok(())),
                Verdict::Gone => return (tries, Err(ReceiverError::Gone { receiver: name })),
                Verdict::Rejected => {
                    let err = ReceiverError::Rejected {
                        receiver: name,
                        status,
                        body,
                    };
                    return (tries, Err(err));
                }
                Verdict::Retry(wait) => wait,
            };
            last = if status == 0 {
                body
            } else {
                format!("HTTP {status}: {body}")
            };
            if attempt == policy.max_attempts {
                break;
            }
            let wait = wait
                .unwrap_or_else(|| backoff(policy.initial_backoff, attempt))
                .min(policy.max_backoff);
            self.metrics.retried.with_label_values(&[&name]).inc();
            tracing::info!(receiver = %name, id = %n.id, attempt, status, wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), error = %last, "delivery will be retried");
            tokio::time::sleep(wait).await;
        }
        let err = ReceiverError::GaveUp {
            receiver: name,
            attempts: policy.max_attempts,
            last,
        };
        (tries, Err(err))
    }

    /// Waits until `min_interval` has passed since the previous request.
    async fn pace(&mut self) {
        let interval = self.receiver.min_interval();
        if let Some(last) = self.last_request {
            tokio::time::sleep_until(last + interval).await;
        }
        self.last_request = Some(Instant::now());
    }

    /// One request: the verdict, the HTTP status (0 when there was no
    /// answer) and the answer's start or the transport error, neither ever
    /// holding the URL.
    async fn attempt(
        &self,
        outgoing: &super::Outgoing,
        timeout: Duration,
    ) -> (Verdict, u16, String) {
        let mut request = self
            .client
            .post(self.receiver.url())
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(outgoing.body.clone());
        for (name, value) in &outgoing.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) => return (Verdict::Retry(None), 0, transport_error(err)),
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(err) => return (Verdict::Retry(None), status, transport_error(err)),
        };
        let verdict = self.receiver.verdict(status, &headers, &body);
        (verdict, status, excerpt(&body))
    }
}

/// reqwest's errors name the URL, which holds the webhook's token.
fn transport_error(err: reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let err = err.without_url();
    let mut text = format!("{kind}: {err}");
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The start of an error answer, enough to tell what the service disliked.
fn excerpt(body: &[u8]) -> String {
    super::truncate(String::from_utf8_lossy(body).trim(), 200)
}

/// `initial × 2^(attempt-1)`, then a random point in its upper half, so
/// receivers failing together do not retry in step.
fn backoff(initial: Duration, attempt: u32) -> Duration {
    let full = initial.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
    let half = full / 2;
    let jitter_ms = rand::random_range(0..=u64::try_from(half.as_millis()).unwrap_or(u64::MAX));
    half + Duration::from_millis(jitter_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_in_the_upper_half() {
        let initial = Duration::from_millis(100);
        for attempt in 1..=5 {
            let full = 100u64 << (attempt - 1);
            let wait = backoff(initial, attempt).as_millis() as u64;
            assert!(
                (full / 2..=full).contains(&wait),
                "attempt {attempt}: {wait} ms"
            );
        }
    }

    fn worker(toml: &str) -> Worker {
        let receiver: Receiver = toml::from_str(toml).expect("receiver config parses");
        Worker {
            receiver,
            client: http_client().expect("HTTP client builds"),
            metrics: DeliveryMetrics::new(&Registry::new()).expect("metrics register"),
            reports: None,
            last_request: None,
        }
    }

    // Paused clock: virtual time only moves by the sleeps, so the spacing
    // measured is exactly the one `pace` imposed.
    #[tokio::test(start_paused = true)]
    async fn slack_is_paced_at_one_request_per_second() {
        let mut slack = worker("kind = \"slack\"\nname = \"s\"\nurl = \"https://hooks.example/x\"");
        let start = Instant::now();
        slack.pace().await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        slack.pace().await;
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        tokio::time::advance(Duration::from_secs(5)).await;
        let later = Instant::now();
        slack.pace().await;
        assert_eq!(later.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn min_interval_is_configurable() {
        let mut discord = worker(
            "kind = \"discord\"\nname = \"d\"\nurl = \"https://discord.example/x\"\n\
             delivery = { min_interval = \"250ms\" }",
        );
        let start = Instant::now();
        discord.pace().await;
        discord.pace().await;
        discord.pace().await;
        assert_eq!(start.elapsed(), Duration::from_millis(500));
    }

    #[test]
    fn backoff_saturates() {
        let wait = backoff(Duration::from_secs(1), 100);
        assert!(wait >= Duration::from_secs(1));
    }
}
