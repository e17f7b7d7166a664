//! Summaries: `{name}` replaced by the value of a placeholder, nothing
//! else (no expressions, no escapes). A `{` not starting a `{word}` stays
//! as written; a known placeholder a kind does not fill renders empty.

/// Every placeholder a summary may use.
pub const PLACEHOLDERS: &[&str] = &[
    "rule",
    "severity",
    "node",
    "site",
    "unit",
    "state",
    "status",
    "error",
    "latency",
    "location",
    "previous_location",
    "days",
    "reason",
    "cert_error",
    "value",
    "level",
    "group",
    "window",
    "count",
    "total",
    "mountpoints",
    "silence",
    "content_failure",
    "excerpt",
    "side",
    "down",
    "up",
];

/// The `{word}`s of `template`, in order.
fn words(template: &str) -> impl Iterator<Item = (usize, &str)> + '_ {
    template.match_indices('{').filter_map(move |(start, _)| {
        let rest = &template[start + 1..];
        let end = rest.find('}')?;
        let word = &rest[..end];
        let is_word = !word.is_empty()
            && word
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        is_word.then_some((start, word))
    })
}

/// The first placeholder of `template` that does not exist.
pub fn unknown_placeholder(template: &str) -> Option<&str> {
    words(template)
        .map(|(_, word)| word)
        .find(|word| !PLACEHOLDERS.contains(word))
}

/// `template` with each known `{word}` replaced by its value in `vars`
/// (empty when absent).
pub fn render(template: &str, vars: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut copied = 0;
    for (start, word) in words(template) {
        if !PLACEHOLDERS.contains(&word) {
            continue;
        }
        out.push_str(&template[copied..start]);
        if let Some((_, value)) = vars.iter().find(|(name, _)| *name == word) {
            out.push_str(value);
        }
        copied = start + word.len() + 2;
    }
    out.push_str(&template[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_known_words_and_leaves_other_braces() {
        let vars = [
            ("site", "shop.example".to_owned()),
            ("status", "503".to_owned()),
        ];
        assert_eq!(
            render("{site} answers {status} {node}{", &vars),
            "shop.example answers 503 {"
        );
        assert_eq!(
            render("json {\"a\": 1} {other}", &vars),
            "json {\"a\": 1} {other}"
        );
        assert_eq!(unknown_placeholder("{site} {sitee}"), Some("sitee"));
        assert_eq!(unknown_placeholder("{site} {\"x\"}"), None);
    }
}
