//! The alerter's delivery spans. On their own in this binary: a test
//! running concurrently could register the span's callsite before this
//! test's subscriber exists, and tracing would then cache it as disabled.

// Tests may unwrap (house rules): a panic is the test failing.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use livehead_alerter::{DeliveryMetrics, Dispatcher, Notification, Receiver, Severity, Status};
use livehead_testkit::receiver::FakeReceiver;
use prometheus::Registry;

const FAST: &str = r#"delivery = { initial_backoff = "10ms", min_interval = "0s" }"#;

fn notification() -> Notification {
    Notification {
        id: "site-down/critical/n1/shop.example/".to_owned(),
        rule: "site-down".to_owned(),
        severity: Severity::Critical,
        status: Status::Firing,
        summary: "shop.example answers 503".to_owned(),
        description: None,
        node: Some("n1".to_owned()),
        site: Some("shop.example".to_owned()),
        service: None,
        since_ms: 1_700_000_000_000,
        ended_ms: None,
        labels: BTreeMap::new(),
        link: None,
    }
}

/// A span's name and its parent's.
type Lineage = (String, Option<String>);

/// Each new span's lineage, as a tracing layer sees it.
#[derive(Clone, Default)]
struct Parents(Arc<Mutex<Vec<Lineage>>>);

impl<S> tracing_subscriber::Layer<S> for Parents
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        _: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let span = ctx.span(id).unwrap();
        let parent = span.parent().map(|p| p.name().to_owned());
        self.0
            .lock()
            .unwrap()
            .push((span.name().to_owned(), parent));
    }
}

/// What makes the alert → notification part of a trace: the delivery's
/// span hangs under the span current when the notification was queued
/// (the alerter's evaluation), though it runs later on the receiver's task.
#[tokio::test]
async fn a_delivery_span_is_a_child_of_the_evaluation_that_queued_it() {
    use tracing_subscriber::layer::SubscriberExt;
    let parents = Parents::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(parents.clone()));
    let fake = FakeReceiver::scripted(vec![], None).await;
    let hook: Receiver = toml::from_str(&format!(
        "kind = \"webhook\"\nname = \"hook\"\nurl = \"{}\"\n{FAST}",
        fake.url("/am")
    ))
    .unwrap();
    let metrics = DeliveryMetrics::new(&Registry::new()).unwrap();
    let dispatcher = Dispatcher::start(vec![hook], metrics.clone(), None).unwrap();
    {
        let evaluation = tracing::info_span!("alerter.evaluate");
        let _in = evaluation.enter();
        dispatcher.notify("hook", notification()).unwrap();
    }
    tokio::time::timeout(Duration::from_secs(60), dispatcher.close())
        .await
        .unwrap();

    assert_eq!(metrics.sent.with_label_values(&["hook"]).get(), 1);
    let seen = parents.0.lock().unwrap().clone();
    assert!(
        seen.contains(&(
            "alerter.notify".to_owned(),
            Some("alerter.evaluate".to_owned())
        )),
        "{seen:?}"
    );
}
