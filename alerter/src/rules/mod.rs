//! Rules: what the `[[rules]]` of a rules file say, checked, and the engine
//! that evaluates them as records arrive.

use serde::Deserialize;

/// One `[[rules]]` table. (Filled in by the rules work of issue 11.)
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub name: String,
}
