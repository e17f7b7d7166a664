//! What happens to an alert once the rules decided it: states, silences,
//! inhibition, grouping, routing to receivers, and the state that survives
//! a restart.

use serde::Deserialize;

/// The `[route]` table: the root of the routing tree. (Filled in by the
/// lifecycle work of issue 11.)
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub receiver: Option<String>,
}

/// One `[[inhibit]]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InhibitSpec {}
