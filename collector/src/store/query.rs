//! What the HTTP API reads, and the one place its filters become SQL. Both
//! backends build their `WHERE` from [`DumpFilter::conditions`]: fixed SQL text
//! with `?` placeholders, the values returned separately and bound by the
//! backend's driver, so no value a user sends is ever spliced into SQL.

use livehead_common::vantage::INSIDE;

/// Most sites one `/dump_last` answer holds (the old worker's cap).
pub const MAX_DUMP_LIMIT: u32 = 5000;
/// Sites in a `/dump_last` answer when `limit` is not given.
pub const DEFAULT_DUMP_LIMIT: u32 = 1000;

/// The newest probe of one site, in the old worker's terms. Also the row the
/// ClickHouse store reads it as (fields in the queries' column order). The
/// fields after `ts` came with issue 16 (certificate trust, content checks):
/// empty when not checked, as on every row written before them.
#[derive(Debug, Clone, PartialEq, Eq, Default, ::clickhouse::Row, serde::Deserialize)]
pub struct LastState {
    pub site: String,
    pub status: u16,
    pub ms: u32,
    pub port: u16,
    /// Empty when the answer was not a redirect.
    pub location: String,
    /// 1 when the redirect leaves the site's registrable domain.
    pub cross: u8,
    /// Unix milliseconds.
    pub ts: u64,
    /// See [`ProbeRow`](super::ProbeRow)'s fields of the same names.
    pub cert_trust: String,
    pub cert_error: String,
    pub content: String,
    pub content_failure: String,
    pub content_excerpt: String,
    /// Where the probe was made from (`inside` for old rows and `/push`).
    pub vantage: String,
}

/// Sort order of `/dump_last` by `ts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    Asc,
    #[default]
    Desc,
}

impl Order {
    /// `ORDER BY` text: newest (or oldest) first, ties by site so pages are stable.
    pub fn order_by(self) -> &'static str {
        match self {
            Self::Asc => "ts ASC, site ASC",
            Self::Desc => "ts DESC, site ASC",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Asc => "asc",
            Self::Desc => "desc",
        }
    }
}

/// `/dump_last`'s filters, already validated. Every condition set is ANDed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpFilter {
    /// Any of these statuses; empty for any status.
    pub statuses: Vec<u16>,
    /// Only cross-domain redirects (`Some(true)`) or only the others.
    pub cross: Option<bool>,
    /// `ts >= since` (unix ms).
    pub since: Option<u64>,
    /// `ts <= until` (unix ms).
    pub until: Option<u64>,
    /// SQL `LIKE` pattern on the site (`%`, `_`, `\` escapes the next character).
    pub site_like: Option<String>,
    /// 1..=[`MAX_DUMP_LIMIT`].
    pub limit: u32,
    pub offset: u64,
    pub order: Order,
    /// Only probes from this vantage (`inside` unless asked).
    pub vantage: String,
}

impl Default for DumpFilter {
    fn default() -> Self {
        Self {
            statuses: Vec::new(),
            cross: None,
            since: None,
            until: None,
            site_like: None,
            limit: DEFAULT_DUMP_LIMIT,
            offset: 0,
            order: Order::Desc,
            vantage: INSIDE.to_owned(),
        }
    }
}

/// A value bound to a `?` placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    Int(u64),
    Text(String),
}

/// A `WHERE` clause body and its values, in placeholder order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Conditions {
    /// Never empty (the vantage is always a condition), so it can follow `WHERE`.
    pub sql: String,
    pub params: Vec<Param>,
}

impl DumpFilter {
    /// The filter as SQL conditions on the columns `vantage, site, status,
    /// cross, ts`; the vantage always (each site has a state per vantage).
    /// `like_suffix` follows `site LIKE ?`: SQLite needs `ESCAPE '\'` to read
    /// `\` as ClickHouse does.
    pub fn conditions(&self, like_suffix: &str) -> Conditions {
        let mut parts = vec!["vantage = ?".to_owned()];
        let mut params = vec![Param::Text(self.vantage.clone())];
        if !self.statuses.is_empty() {
            let marks = vec!["?"; self.statuses.len()].join(", ");
            parts.push(format!("status IN ({marks})"));
            params.extend(self.statuses.iter().map(|s| Param::Int(u64::from(*s))));
        }
        if let Some(cross) = self.cross {
            parts.push("`cross` = ?".to_owned());
            params.push(Param::Int(u64::from(cross)));
        }
        if let Some(since) = self.since {
            parts.push("ts >= ?".to_owned());
            params.push(Param::Int(since));
        }
        if let Some(until) = self.until {
            parts.push("ts <= ?".to_owned());
            params.push(Param::Int(until));
        }
        if let Some(pattern) = &self.site_like {
            parts.push(format!("site LIKE ?{like_suffix}"));
            params.push(Param::Text(pattern.clone()));
        }
        Conditions {
            sql: parts.join(" AND "),
            params,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_filter_is_the_inside_vantage() {
        let c = DumpFilter::default().conditions("");
        assert_eq!(c.sql, "vantage = ?");
        assert_eq!(c.params, [Param::Text("inside".into())]);
    }

    #[test]
    fn every_value_is_a_placeholder() {
        let filter = DumpFilter {
            statuses: vec![500, 403],
            cross: Some(true),
            since: Some(10),
            until: Some(20),
            site_like: Some("%'; DROP TABLE health_last; --".into()),
            ..DumpFilter::default()
        };
        let c = filter.conditions(" ESCAPE '\\'");
        assert_eq!(
            c.sql,
            "vantage = ? AND status IN (?, ?) AND `cross` = ? AND ts >= ? AND ts <= ? AND site LIKE ? ESCAPE '\\'"
        );
        assert_eq!(
            c.params,
            vec![
                Param::Text("inside".into()),
                Param::Int(500),
                Param::Int(403),
                Param::Int(1),
                Param::Int(10),
                Param::Int(20),
                Param::Text("%'; DROP TABLE health_last; --".into()),
            ]
        );
    }
}
