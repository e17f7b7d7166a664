use std::time::Duration;

use livehead_testkit::receiver::{FakeReceiver, Received, reply};

use super::*;

const ID: &str = "7c3e5f0e-8d1b-4a57-9a8e-2f0b1c9d4e6a";
const WAIT: Duration = Duration::from_secs(10);

fn config(url: String, check: &str, argv: &[&str]) -> RunCheckConfig {
    let mut c = RunCheckConfig::new(
        url,
        check.into(),
        argv.iter().map(|s| (*s).to_owned()).collect(),
    );
    c.ping_timeout = Duration::from_secs(5);
    c
}

fn rid_of(r: &Received) -> &str {
    r.query.strip_prefix("rid=").unwrap_or_default()
}

#[tokio::test]
async fn success_pings_start_then_zero_with_the_output() {
    let receiver = FakeReceiver::start().await;
    let c = config(receiver.url(""), ID, &["sh", "-c", "echo hello"]);
    assert_eq!(run(&c).await.expect("runs"), 0);
    let got = receiver.wait_for(2, WAIT).await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].path, format!("/ping/{ID}/start"));
    assert_eq!(got[1].path, format!("/ping/{ID}/0"));
    assert_eq!(got[0].method, http::Method::POST);
    let rid = rid_of(&got[0]);
    assert!(is_uuid(rid), "rid {rid:?}");
    assert_eq!(rid_of(&got[1]), rid);
    assert_eq!(&got[1].raw[..], b"hello\n");
}

#[tokio::test]
async fn a_failing_command_reports_its_status_and_output_tail() {
    let receiver = FakeReceiver::start().await;
    let script = "echo first; echo disk full >&2; exit 3";
    let c = config(receiver.url("/"), ID, &["sh", "-c", script]);
    assert_eq!(run(&c).await.expect("runs"), 3);
    let got = receiver.wait_for(2, WAIT).await;
    assert_eq!(got[1].path, format!("/ping/{ID}/3"));
    let body = String::from_utf8_lossy(&got[1].raw);
    assert!(
        body.contains("first\n") && body.contains("disk full\n"),
        "{body}"
    );

    // Only the tail is sent.
    let receiver = FakeReceiver::start().await;
    let mut c = config(
        receiver.url(""),
        ID,
        &["sh", "-c", "printf 0123456789; exit 1"],
    );
    c.tail_bytes = 4;
    assert_eq!(run(&c).await.expect("runs"), 1);
    let got = receiver.wait_for(2, WAIT).await;
    assert_eq!(&got[1].raw[..], b"6789");
}

#[tokio::test]
async fn a_command_killed_by_a_signal_exits_128_plus_the_signal() {
    let receiver = FakeReceiver::start().await;
    let c = config(receiver.url(""), ID, &["sh", "-c", "kill -9 $$"]);
    assert_eq!(run(&c).await.expect("runs"), 137);
    let got = receiver.wait_for(2, WAIT).await;
    assert_eq!(got[1].path, format!("/ping/{ID}/137"));
}

#[tokio::test]
async fn the_command_runs_and_keeps_its_status_when_the_ping_url_is_down() {
    // A port nobody listens on: bound, then closed.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("ran");
    let script = format!("touch {}; exit 5", marker.display());
    let mut c = config(format!("http://{addr}"), ID, &["sh", "-c", &script]);
    c.ping_attempts = 2;
    assert_eq!(run(&c).await.expect("runs"), 5);
    assert!(marker.exists(), "the command ran");
}

#[tokio::test]
async fn a_refused_ping_is_not_retried_and_a_server_error_is() {
    // 404 (unknown check): one request, then the end ping.
    let receiver = FakeReceiver::scripted(vec![reply(404)], None).await;
    let mut c = config(receiver.url(""), "nightly-backup", &["true"]);
    c.ping_key = Some("k3y_abc".into());
    assert_eq!(run(&c).await.expect("runs"), 0);
    let got = receiver.wait_for(2, WAIT).await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].path, "/ping/k3y_abc/nightly-backup/start");
    assert_eq!(got[1].path, "/ping/k3y_abc/nightly-backup/0");

    // 503: retried.
    let receiver = FakeReceiver::scripted(vec![reply(503)], None).await;
    let c = config(receiver.url(""), ID, &["true"]);
    assert_eq!(run(&c).await.expect("runs"), 0);
    let got = receiver.wait_for(3, WAIT).await;
    let paths: Vec<&str> = got.iter().map(|r| r.path.as_str()).collect();
    let start = format!("/ping/{ID}/start");
    let end = format!("/ping/{ID}/0");
    assert_eq!(paths, [start.as_str(), start.as_str(), end.as_str()]);
}

#[tokio::test]
async fn a_command_that_cannot_start_reports_127() {
    let receiver = FakeReceiver::start().await;
    let c = config(receiver.url(""), ID, &["/nonexistent/livehead-test-cmd"]);
    assert_eq!(run(&c).await.expect("runs"), 127);
    let got = receiver.wait_for(2, WAIT).await;
    assert_eq!(got[1].path, format!("/ping/{ID}/127"));
    assert!(String::from_utf8_lossy(&got[1].raw).contains("cannot run"));
}

#[test]
fn ping_urls_by_uuid_or_slug() {
    let c = config("https://hc.example/base/".into(), ID, &["true"]);
    let urls = PingUrls::new(&c, "r1".into()).expect("uuid");
    assert_eq!(
        urls.start(),
        format!("https://hc.example/base/ping/{ID}/start?rid=r1")
    );
    assert_eq!(
        urls.exit(3),
        format!("https://hc.example/base/ping/{ID}/3?rid=r1")
    );

    let mut c = config("http://c:8080".into(), "backup", &["true"]);
    assert!(matches!(
        PingUrls::new(&c, "r".into()),
        Err(RunCheckError::SlugWithoutKey(_))
    ));
    c.ping_key = Some("key".into());
    let urls = PingUrls::new(&c, "r".into()).expect("slug");
    assert_eq!(urls.exit(0), "http://c:8080/ping/key/backup/0?rid=r");
    assert_eq!(
        urls.shown(&urls.exit(0)),
        "http://c:8080/ping/<ping-key>/backup/0?rid=r"
    );
    c.check = "../etc".into();
    assert!(matches!(
        PingUrls::new(&c, "r".into()),
        Err(RunCheckError::BadCheck(_))
    ));

    for bad in ["", "ftp://x", "not a url"] {
        let c = config(bad.into(), ID, &["true"]);
        assert!(PingUrls::new(&c, "r".into()).is_err(), "{bad:?}");
    }
}

#[test]
fn rids_are_v4_uuids() {
    let a = new_rid();
    assert!(is_uuid(&a));
    assert_eq!(&a[14..15], "4");
    assert_ne!(a, new_rid());
}
