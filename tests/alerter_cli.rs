//! `livehead alerter check` and `livehead alerter test` as an operator runs
//! them: the deployed example passes both; a broken file fails with the
//! line at fault; a failing rule test exits 1 with its diff.

use std::path::Path;
use std::process::{Command, Output};

fn livehead(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_livehead"))
        .args(args)
        .output()
        .expect("run livehead")
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/rules")
        .join(name)
        .display()
        .to_string()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_deployed_example_passes_check_and_its_tests() {
    let out = livehead(&["alerter", "check", &example("rules.toml")]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("OK"), "{}", text(&out));
    let out = livehead(&["alerter", "test", &example("rules_test.toml")]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("0 failed"), "{}", text(&out));
}

#[test]
fn check_names_the_line_of_each_mistake() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        // An unknown key, on line 4.
        (
            "[[rules]]\nname = \"A\"\nkind = \"status\"\nstatusez = [\"5xx\"]\n",
            "line 4",
            "statusez",
        ),
        // A bad duration, on line 4.
        (
            "[[rules]]\nname = \"A\"\nkind = \"unreachable\"\nfor = \"5 parsecs\"\n",
            "line 4",
            "for",
        ),
        // A route to a receiver that does not exist, on line 6.
        (
            "[[receivers]]\nkind = \"slack\"\nname = \"slack\"\nurl = \"https://hooks.example.invalid/x\"\n[route]\nreceiver = \"slak\"\n",
            "line 6",
            "slak",
        ),
    ];
    for (i, (rules, line, word)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("rules{i}.toml"));
        std::fs::write(&path, rules).expect("write");
        let out = livehead(&["alerter", "check", &path.display().to_string()]);
        let said = text(&out);
        assert_eq!(out.status.code(), Some(1), "{said}");
        assert!(
            said.contains(line) && said.contains(word),
            "case {i}: {said}"
        );
    }
}

#[test]
fn a_failing_rule_test_exits_1_with_its_diff() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("rules.toml"),
        "[[rules]]\nname = \"SiteDown\"\nkind = \"unreachable\"\nseverity = \"critical\"\nfailure_threshold = 3\n",
    )
    .expect("rules");
    // Two failures only: the rule wants three, yet the test expects it firing.
    std::fs::write(
        dir.path().join("rules_test.toml"),
        "rule_files = [\"rules.toml\"]\n[[tests]]\nname = \"too early\"\ninterval = \"1m\"\n\
         [[tests.sites]]\nsite = \"shop.example\"\nnode = \"n1\"\nvalues = \"0 0\"\n\
         [[tests.expect]]\nat = \"1m\"\nalerts = [{ rule = \"SiteDown\", node = \"n1\", site = \"shop.example\" }]\n",
    )
    .expect("tests");
    let path = dir.path().join("rules_test.toml").display().to_string();
    let out = livehead(&["alerter", "test", &path]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("FAIL too early"), "{said}");
}
