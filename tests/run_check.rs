//! `livehead run` as a cron job runs it: the real binary, a recording
//! stand-in for the collector's ping endpoints.

use std::process::{Command, Stdio};
use std::time::Duration;

use livehead_testkit::receiver::FakeReceiver;

const ID: &str = "5bf7e3c1-0f5e-4d3a-9c56-7d1b2e3f4a5b";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_is_passed_on_and_its_status_reported() {
    let receiver = FakeReceiver::start().await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_livehead"))
        .args(["run", "--check", ID, "--url", &receiver.url(""), "--"])
        .args(["sh", "-c", "echo started; exec sleep 30"])
        .stdout(Stdio::null())
        .spawn()
        .expect("livehead run");
    // The start ping is sent before the command starts, and the signals
    // are caught before it too; its output shows it runs.
    let got = receiver.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(got[0].path, format!("/ping/{ID}/start"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert_eq!(status.code(), Some(128 + 15));
    let got = receiver.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(got[1].path, format!("/ping/{ID}/143"));
    assert_eq!(got[0].query, got[1].query, "one rid");
}
