//! What users see of the binary itself: `--version`, and log lines without
//! colour codes when stderr is not a terminal.

use std::process::{Command, Output, Stdio};

use livehead_testkit::free_port;

fn livehead(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_livehead"));
    command.args(args).stdin(Stdio::null());
    command
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let out = livehead(&["--version"]).output().expect("run livehead");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let line = text.trim();
    let prefix = concat!("livehead ", env!("CARGO_PKG_VERSION"), " (commit ");
    let commit = line
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{line:?} is not {prefix}<commit>)"));
    let hex = commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit());
    assert!(hex || commit == "unknown", "{commit:?}");
    // Built from a checkout, it is that checkout's commit.
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    if let Some(head) = head.ok().filter(|h| h.status.success()) {
        assert_eq!(commit, String::from_utf8_lossy(&head.stdout).trim());
    }
}

/// A one-shot agent with nothing to probe and no collector: it logs its
/// round and its failed connection, then gives up quickly.
fn agent_logging_to_a_pipe(extra: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let sites = dir.path().join("www");
    std::fs::create_dir(&sites).expect("web root");
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "[collector]\ndrain_timeout = \"300ms\"\n").expect("config");
    let collector = format!("http://127.0.0.1:{}", free_port());
    let metrics = format!("127.0.0.1:{}", free_port());
    let (config, sites) = (config.display().to_string(), sites.display().to_string());
    let mut args = vec![
        "agent",
        "--insecure",
        "--once",
        "--no-sample",
        "--config",
        &config,
        "--web-root",
        &sites,
        "--collector-url",
        &collector,
        "--metrics-listen",
        &metrics,
    ];
    args.extend_from_slice(extra);
    livehead(&args)
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run livehead agent")
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let out = agent_logging_to_a_pipe(&[]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("round done"), "{log}");
    assert!(!log.contains("\x1b["), "{log:?}");
}

#[test]
fn json_logs_stay_json() {
    let out = agent_logging_to_a_pipe(&["--log-format", "json"]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("round done"), "{log}");
    for line in log.lines().filter(|l| l.contains("\"level\"")) {
        let value: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        assert!(value.get("fields").is_some(), "{line}");
    }
    assert!(!log.contains("\x1b["), "{log:?}");
}
