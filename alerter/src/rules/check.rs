//! What toml cannot see: keys that do not apply to a rule's kind, levels
//! out of order, bad globs, duplicate names... Each problem is reported at
//! the line of the key at fault (found again in the text by the rule's
//! index), in the same shape as toml's own errors.

use std::collections::HashMap;
use std::ops::Range;

use globset::Glob;
use toml::de::{DeTable, DeValue};

use super::spec::{COMMON_KEYS, RuleKind, RuleSpec, StatusMatch, class_digit};
use super::template;

/// Label names the key already sets; a rule may not override them.
const RESERVED_LABELS: &[&str] = &["alertname", "severity", "node", "site", "service"];

/// One problem: the rule's index, the key at fault (`None`: the whole
/// table) and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub rule: usize,
    pub key: Option<String>,
    pub message: String,
}

/// Checks `rules` (parsed from `text`); the error lists every problem, each
/// naming its line and column.
pub fn check(rules: &[RuleSpec], text: &str) -> Result<(), String> {
    let problems = problems(rules, &present_keys(text, rules.len()));
    if problems.is_empty() {
        return Ok(());
    }
    let doc = parse(text);
    let rendered: Vec<String> = problems
        .iter()
        .map(|p| render(text, locate(doc.as_ref(), p), p, rules))
        .collect();
    Err(rendered.join("\n"))
}

/// The semantic problems of `rules`. `keys[i]` are the keys rule `i`
/// wrote (empty when unknown: rules built in code).
pub fn problems(rules: &[RuleSpec], keys: &[Vec<String>]) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (index, rule) in rules.iter().enumerate() {
        let mut report = |key: Option<&str>, message: String| {
            out.push(Problem {
                rule: index,
                key: key.map(str::to_owned),
                message,
            });
        };
        if rule.name == crate::heartbeats::RULE {
            report(
                Some("name"),
                format!(
                    "rule name `{}` is taken by the heartbeat checks' alerts",
                    rule.name
                ),
            );
        }
        if let Some(first) = names.insert(rule.name.as_str(), index) {
            report(
                Some("name"),
                format!(
                    "duplicate rule name `{}` (rule {} has it too)",
                    rule.name,
                    first + 1
                ),
            );
        }
        for key in keys.get(index).into_iter().flatten() {
            if let Some(message) = key_refusal(rule.kind, key) {
                report(Some(key), message);
            }
        }
        check_rule(rule, &mut report);
    }
    out
}

fn key_refusal(kind: RuleKind, key: &str) -> Option<String> {
    let allowed = COMMON_KEYS.contains(&key) || kind.keys().contains(&key);
    let refused = match key {
        "severity" => kind.has_levels(),
        "failure_threshold" | "success_threshold" => kind.evaluated_on_tick(),
        _ => !allowed,
    };
    refused.then(|| {
        if key == "severity" {
            format!("kind `{kind}` has `warning`/`critical` levels, not `severity`")
        } else {
            let own = kind.keys().join("`, `");
            format!("key `{key}` does not apply to kind `{kind}` (its own keys: `{own}`)")
        }
    })
}

fn check_rule(rule: &RuleSpec, report: &mut impl FnMut(Option<&str>, String)) {
    let kind = rule.kind;
    if rule.name.trim().is_empty() {
        report(Some("name"), "the rule's name is empty".to_owned());
    }
    if !kind.has_levels() && rule.severity.is_none() {
        report(
            None,
            format!(
                "rule `{}` needs a `severity` (critical, error, warning, info)",
                rule.name
            ),
        );
    }
    for (key, globs) in [
        ("sites", &rule.sites),
        ("nodes", &rule.nodes),
        ("units", &rule.units),
        ("mountpoints", &rule.mountpoints),
    ] {
        for glob in globs {
            if let Err(e) = Glob::new(glob) {
                report(Some(key), format!("bad glob `{glob}`: {}", e.kind()));
            }
        }
    }
    for name in rule.labels.keys() {
        if RESERVED_LABELS.contains(&name.as_str()) {
            report(
                Some("labels"),
                format!("label `{name}` is set by the alert itself"),
            );
        } else if !valid_label_name(name) {
            report(
                Some("labels"),
                format!("label name `{name}` is not [a-zA-Z_][a-zA-Z0-9_]*"),
            );
        }
    }
    if let Some(word) = rule
        .summary
        .as_deref()
        .and_then(template::unknown_placeholder)
    {
        let known = template::PLACEHOLDERS.join("}, {");
        report(
            Some("summary"),
            format!("unknown placeholder `{{{word}}}` (known: {{{known}}})"),
        );
    }
    if let Some(Err(e)) = rule
        .vantage
        .as_deref()
        .map(livehead_common::vantage::check_vantage)
    {
        report(Some("vantage"), format!("bad vantage: {e}"));
    }
    check_numbers(rule, report);
    check_statuses(rule, report);
}

fn check_numbers(rule: &RuleSpec, report: &mut impl FnMut(Option<&str>, String)) {
    let kind = rule.kind;
    for (key, value) in [
        ("failure_threshold", rule.failure_threshold),
        ("success_threshold", rule.success_threshold),
    ] {
        if value == 0 {
            report(Some(key), format!("`{key}` must be at least 1"));
        }
    }
    for (key, level) in [("warning", rule.warning), ("critical", rule.critical)] {
        if let Some(level) = level.filter(|l| !(0.0..=100.0).contains(l)) {
            report(Some(key), format!("level {level} is outside 0-100"));
        }
    }
    if let (Some(warning), Some(critical)) = (rule.warning, rule.critical) {
        if warning >= critical {
            report(
                Some("warning"),
                format!("`warning` ({warning}) must be below `critical` ({critical})"),
            );
        }
    }
    if let Some(share) = rule.share.filter(|s| !(*s > 0.0 && *s <= 100.0)) {
        report(Some("share"), format!("share {share} is outside (0, 100]"));
    }
    if let Some(q) = rule.quantile.filter(|q| !(*q > 0.0 && *q < 1.0)) {
        report(Some("quantile"), format!("quantile {q} is outside (0, 1)"));
    }
    for (key, zero) in [
        ("window", rule.window.is_some_and(|w| w.is_zero())),
        ("after", rule.after.is_some_and(|a| a.is_zero())),
        ("latency", rule.latency.is_some_and(|l| l.is_zero())),
        ("max_listed", rule.max_listed == Some(0)),
        ("min_sites", rule.min_sites == Some(0)),
    ] {
        if zero {
            report(Some(key), format!("`{key}` must be above zero"));
        }
    }
    let needs_latency = matches!(kind, RuleKind::Latency | RuleKind::LatencyQuantile);
    if needs_latency && rule.latency.is_none() {
        report(None, format!("kind `{kind}` needs `latency` (e.g. \"1s\")"));
    }
    if let (Some(window), RuleKind::ErrorRate | RuleKind::LatencyQuantile) = (rule.window, kind) {
        if window.as_millis() > 86_400_000 {
            report(Some("window"), "`window` is longer than 24h".to_owned());
        }
    }
}

fn check_statuses(rule: &RuleSpec, report: &mut impl FnMut(Option<&str>, String)) {
    if rule.kind == RuleKind::Status && rule.statuses.is_empty() {
        report(
            None,
            "kind `status` needs `statuses` (e.g. [\"5xx\", 0, 404])".to_owned(),
        );
    }
    for status in &rule.statuses {
        let ok = match status {
            StatusMatch::Code(code) => *code == 0 || (100..=599).contains(code),
            StatusMatch::Class(class) => class_digit(class).is_some(),
        };
        if !ok {
            report(
                Some("statuses"),
                format!("`{status}` is neither a status (0, 100-599) nor a class (1xx-5xx)"),
            );
        }
    }
}

fn valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn parse(text: &str) -> Option<DeValue<'_>> {
    DeTable::parse(text)
        .ok()
        .map(|doc| DeValue::Table(doc.into_inner()))
}

/// The keys each `[[rules]]` table of `text` wrote, by index.
fn present_keys(text: &str, count: usize) -> Vec<Vec<String>> {
    let doc = parse(text);
    (0..count)
        .map(|index| {
            rule_table(doc.as_ref(), index)
                .and_then(|table| table.get_ref().as_table())
                .map(|table| table.keys().map(|k| k.get_ref().to_string()).collect())
                .unwrap_or_default()
        })
        .collect()
}

fn rule_table<'a, 'i>(
    doc: Option<&'a DeValue<'i>>,
    index: usize,
) -> Option<&'a toml::Spanned<DeValue<'i>>> {
    doc?.get("rules")?.get_ref().get(index)
}

/// Where in the text the problem is: the key's value, else the table.
fn locate(doc: Option<&DeValue<'_>>, problem: &Problem) -> Option<Range<usize>> {
    let table = rule_table(doc, problem.rule)?;
    let key = problem.key.as_deref().and_then(|key| {
        let table = table.get_ref().as_table()?;
        table
            .iter()
            .find(|(k, _)| k.get_ref() == key)
            .map(|(k, _)| k.span())
    });
    Some(key.unwrap_or_else(|| table.span()))
}

/// toml's layout: "line N, column C", the line with a caret, the message.
fn render(text: &str, span: Option<Range<usize>>, problem: &Problem, rules: &[RuleSpec]) -> String {
    let name = rules.get(problem.rule).map_or("", |r| r.name.as_str());
    let what = format!("rules[{}] (`{name}`): {}", problem.rule, problem.message);
    let Some(span) = span else {
        return what;
    };
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_no = text[..line_start].matches('\n').count() + 1;
    let line = text[line_start..].lines().next().unwrap_or("");
    let column = text[line_start..start].chars().count() + 1;
    let gutter = " ".repeat(line_no.to_string().len());
    let caret = " ".repeat(column - 1);
    format!(
        "TOML error at line {line_no}, column {column}\n{gutter} |\n{line_no} | {line}\n{gutter} | {caret}^\n{what}\n"
    )
}

#[cfg(test)]
mod tests {
    use crate::RulesFile;

    /// The error of parsing `text`, which must name `line`.
    fn error_at(text: &str, line: usize) -> String {
        let error = RulesFile::parse(text).expect_err("refused");
        assert!(
            error.contains(&format!("at line {line},")),
            "expected line {line} in:\n{error}"
        );
        error
    }

    const GOOD: &str = r#"
[[rules]]
name = "SiteServerError"
kind = "status"
severity = "error"
statuses = ["5xx", 0, 404]
"#;

    #[test]
    fn vantage_is_a_label_where_probes_are_read() {
        let error = error_at(&format!("{GOOD}vantage = \"Out side\"\n"), 7);
        assert!(error.contains("bad vantage"), "{error}");
        let cpu = "[[rules]]\nname = \"Cpu\"\nkind = \"cpu\"\nvantage = \"outside\"\n";
        error_at(cpu, 4);
        // The vantage kind compares every vantage: it reads none in particular.
        let side = "[[rules]]\nname = \"Side\"\nkind = \"vantage\"\nseverity = \"error\"\n";
        assert!(RulesFile::parse(side).is_ok());
        error_at(&format!("{side}vantage = \"outside\"\n"), 5);
        assert!(RulesFile::parse(&format!("{GOOD}vantage = \"outside\"\n")).is_ok());
    }

    #[test]
    fn a_good_rule_passes() {
        let file = RulesFile::parse(GOOD).expect("accepted");
        assert_eq!(file.rules.len(), 1);
    }

    #[test]
    fn unknown_key_names_its_line() {
        let text = format!("{GOOD}failure_treshold = 3\n");
        let error = error_at(&text, 7);
        assert!(error.contains("failure_treshold"), "{error}");
    }

    #[test]
    fn bad_duration_names_its_line() {
        let text = format!("{GOOD}for = \"5 minutes and a bit\"\n");
        error_at(&text, 7);
    }

    #[test]
    fn unknown_kind_names_its_line() {
        let error = error_at(
            "[[rules]]\nname = \"X\"\nkind = \"teapot\"\nseverity = \"info\"\n",
            3,
        );
        assert!(error.contains("teapot"), "{error}");
    }

    #[test]
    fn a_key_of_another_kind_names_its_line() {
        let text = format!("{GOOD}window = \"5m\"\n");
        let error = error_at(&text, 7);
        assert!(
            error.contains("key `window` does not apply to kind `status`"),
            "{error}"
        );
    }

    #[test]
    fn levels_out_of_order_name_their_line() {
        let text = "[[rules]]\nname = \"Cpu\"\nkind = \"cpu\"\nwarning = 95\ncritical = 90\n";
        let error = error_at(text, 4);
        assert!(error.contains("must be below `critical`"), "{error}");
        let error = error_at(
            "[[rules]]\nname = \"Cpu\"\nkind = \"cpu\"\ncritical = 190\n",
            4,
        );
        assert!(error.contains("outside 0-100"), "{error}");
        let error = error_at(
            "[[rules]]\nname = \"Cpu\"\nkind = \"cpu\"\nseverity = \"info\"\n",
            4,
        );
        assert!(error.contains("levels"), "{error}");
    }

    #[test]
    fn the_heartbeat_rule_name_is_reserved() {
        let text = format!(
            "{GOOD}\n[[rules]]\nname = \"heartbeat\"\nkind = \"unreachable\"\nseverity = \"critical\"\n"
        );
        let error = error_at(&text, 9);
        assert!(error.contains("heartbeat checks"), "{error}");
    }

    #[test]
    fn duplicate_names_point_at_the_second_rule() {
        let text = format!(
            "{GOOD}\n[[rules]]\nname = \"SiteServerError\"\nkind = \"unreachable\"\nseverity = \"critical\"\n"
        );
        let error = error_at(&text, 9);
        assert!(error.contains("duplicate rule name"), "{error}");
    }

    #[test]
    fn shares_globs_statuses_and_placeholders_are_checked() {
        let fleet = "[[rules]]\nname = \"Pod\"\nkind = \"fleet\"\nseverity = \"critical\"\n";
        let error = error_at(&format!("{fleet}share = 150\n"), 5);
        assert!(error.contains("share 150"), "{error}");
        let error = error_at(&format!("{fleet}sites = [\"a[\"]\n"), 5);
        assert!(error.contains("bad glob"), "{error}");
        let error = error_at(&format!("{fleet}statuses = [\"6xx\"]\n"), 5);
        assert!(error.contains("6xx"), "{error}");
        let error = error_at(&format!("{fleet}summary = \"{{nod}} is down\"\n"), 5);
        assert!(error.contains("unknown placeholder `{nod}`"), "{error}");
        let error = error_at(&format!("{fleet}labels = {{ node = \"x\" }}\n"), 5);
        assert!(error.contains("set by the alert itself"), "{error}");
        let error = error_at(&format!("{fleet}failure_threshold = 2\n"), 5);
        assert!(error.contains("does not apply"), "{error}");
    }

    #[test]
    fn a_missing_requirement_names_the_rule_table() {
        let error = error_at(
            "\n[[rules]]\nname = \"Slow\"\nkind = \"latency\"\nseverity = \"warning\"\n",
            2,
        );
        assert!(error.contains("needs `latency`"), "{error}");
        let error = error_at("[[rules]]\nname = \"Down\"\nkind = \"unreachable\"\n", 1);
        assert!(error.contains("needs a `severity`"), "{error}");
    }

    #[test]
    fn every_problem_is_reported() {
        let text = "[[rules]]\nname = \"A\"\nkind = \"cpu\"\nwarning = 95\ncritical = 90\nfailure_threshold = 0\n";
        let error = RulesFile::parse(text).expect_err("refused");
        assert!(
            error.contains("at line 4,") && error.contains("at line 6,"),
            "{error}"
        );
    }
}
