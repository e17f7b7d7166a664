//! The SQL the README shows users, so tests run exactly what it says.

use std::path::Path;

/// The statements of the first ```` ```sql ```` block after the README heading
/// `heading` (a whole line, e.g. `### SQLite (the embedded store)`), without
/// `--` comment lines or the trailing `;`.
///
/// # Panics
/// When the README, the heading or the block is missing: the README changed
/// and the test must follow it.
pub fn sql_statements(heading: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let after = text
        .split_once(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("README has no heading {heading:?}"))
        .1;
    let block = after
        .split_once("```sql\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .unwrap_or_else(|| panic!("README: no ```sql block after {heading:?}"))
        .0;
    let code: String = block
        .lines()
        .filter(|line| !line.trim_start().starts_with("--"))
        .map(|line| format!("{line}\n"))
        .collect();
    code.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}
