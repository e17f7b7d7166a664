//! `GET /dump_last`'s query parameters to a [`DumpFilter`]. Pure. Every value
//! is checked here and then only ever bound as a parameter by the store
//! ([`DumpFilter::conditions`]), so nothing a client sends becomes SQL text.

use crate::store::query::{DumpFilter, MAX_DUMP_LIMIT, Order};

use super::params::{self, ParamError, Params, param_error, parse_uint};

/// The parameters `/dump_last` reads; any other one is ignored.
pub const DUMP_PARAMS: &[&str] = &[
    "vantage",
    "status",
    "cross",
    "since",
    "until",
    "site_like",
    "limit",
    "offset",
    "order",
];
/// Most statuses in one `status` list.
pub const MAX_STATUSES: usize = 50;
/// Longest `site_like` pattern, in bytes.
pub const MAX_SITE_LIKE_BYTES: usize = 512;
/// Largest `offset`.
pub const MAX_OFFSET: u64 = 10_000_000;

/// The filter described by the decoded query `pairs`, or the first invalid
/// parameter.
pub fn parse_dump(pairs: &[(String, String)]) -> Result<DumpFilter, ParamError> {
    let params = Params::new(pairs, DUMP_PARAMS)?;
    let mut filter = DumpFilter {
        vantage: params::vantage(params.get("vantage"))?,
        ..DumpFilter::default()
    };
    if let Some(value) = params.get("status") {
        filter.statuses = statuses(value)?;
    }
    if let Some(value) = params.get("cross") {
        filter.cross = Some(cross(value)?);
    }
    filter.since = params.get("since").map(|v| time("since", v)).transpose()?;
    filter.until = params.get("until").map(|v| time("until", v)).transpose()?;
    if let (Some(since), Some(until)) = (filter.since, filter.until) {
        if since > until {
            return Err(param_error(
                "since",
                format!("{since} is after until ({until})"),
            ));
        }
    }
    if let Some(value) = params.get("site_like") {
        filter.site_like = Some(site_like(value)?);
    }
    if let Some(value) = params.get("limit") {
        filter.limit = limit(value)?;
    }
    if let Some(value) = params.get("offset") {
        filter.offset = offset(value)?;
    }
    if let Some(value) = params.get("order") {
        filter.order = order(value)?;
    }
    Ok(filter)
}

fn statuses(value: &str) -> Result<Vec<u16>, ParamError> {
    let mut out = Vec::new();
    for (index, item) in value.split(',').enumerate() {
        if index == MAX_STATUSES {
            return Err(param_error(
                "status",
                format!("more than {MAX_STATUSES} statuses"),
            ));
        }
        let item = item.trim();
        let status = parse_uint("status", item)
            .ok()
            .flatten()
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n <= 999)
            .ok_or_else(|| {
                param_error(
                    "status",
                    format!("{item:?} is not a status code (0-999; a comma-separated list)"),
                )
            })?;
        if !out.contains(&status) {
            out.push(status);
        }
    }
    Ok(out)
}

fn cross(value: &str) -> Result<bool, ParamError> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(param_error(
            "cross",
            format!("{value:?} is not 1, true, 0 or false"),
        )),
    }
}

fn time(param: &'static str, value: &str) -> Result<u64, ParamError> {
    parse_uint(param, value)?.ok_or_else(|| {
        param_error(
            param,
            format!("{value} is out of range (unix time in milliseconds)"),
        )
    })
}

fn site_like(value: &str) -> Result<String, ParamError> {
    if value.len() > MAX_SITE_LIKE_BYTES {
        return Err(param_error(
            "site_like",
            format!(
                "{} bytes, over the {MAX_SITE_LIKE_BYTES}-byte limit",
                value.len()
            ),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(param_error("site_like", "contains control characters"));
    }
    // Sites are stored in lower case.
    Ok(value.to_lowercase())
}

fn limit(value: &str) -> Result<u32, ParamError> {
    // Digits too many for 64 bits are still "above the maximum".
    let n = parse_uint("limit", value)?.unwrap_or(u64::MAX);
    if n == 0 {
        return Err(param_error("limit", "must be at least 1"));
    }
    // The old worker capped the limit rather than refusing it.
    Ok(u32::try_from(n.min(u64::from(MAX_DUMP_LIMIT))).unwrap_or(MAX_DUMP_LIMIT))
}

fn offset(value: &str) -> Result<u64, ParamError> {
    parse_uint("offset", value)?
        .filter(|n| *n <= MAX_OFFSET)
        .ok_or_else(|| param_error("offset", format!("{value} is over {MAX_OFFSET}")))
}

fn order(value: &str) -> Result<Order, ParamError> {
    if value.eq_ignore_ascii_case("asc") {
        Ok(Order::Asc)
    } else if value.eq_ignore_ascii_case("desc") {
        Ok(Order::Desc)
    } else {
        Err(param_error(
            "order",
            format!("{value:?} is not asc or desc"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::query::DEFAULT_DUMP_LIMIT;

    fn parse(query: &[(&str, &str)]) -> Result<DumpFilter, ParamError> {
        let pairs: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        parse_dump(&pairs)
    }

    fn refused(query: &[(&str, &str)]) -> ParamError {
        parse(query).expect_err(&format!("{query:?} should be refused"))
    }

    #[test]
    fn no_parameter_is_the_default_filter() {
        let f = parse(&[]).expect("valid");
        assert_eq!(f, DumpFilter::default());
        assert_eq!(
            (f.limit, f.offset, f.order),
            (DEFAULT_DUMP_LIMIT, 0, Order::Desc)
        );
    }

    #[test]
    fn every_parameter_is_read() {
        let f = parse(&[
            ("status", "500,403, 301,500"),
            ("cross", "TRUE"),
            ("since", "1000"),
            ("until", "2000"),
            ("site_like", "%.Example.COM"),
            ("limit", "20"),
            ("offset", "40"),
            ("order", "ASC"),
            ("_", "1735648000"),
        ])
        .expect("valid");
        assert_eq!(
            f,
            DumpFilter {
                statuses: vec![500, 403, 301],
                cross: Some(true),
                since: Some(1000),
                until: Some(2000),
                site_like: Some("%.example.com".into()),
                limit: 20,
                offset: 40,
                order: Order::Asc,
                vantage: "inside".into(),
            }
        );
    }

    #[test]
    fn cross_reads_both_spellings() {
        for (value, want) in [("1", true), ("true", true), ("0", false), ("False", false)] {
            assert_eq!(parse(&[("cross", value)]).expect(value).cross, Some(want));
        }
    }

    #[test]
    fn empty_values_are_absent() {
        let f =
            parse(&[("status", ""), ("limit", ""), ("order", ""), ("cross", "")]).expect("valid");
        assert_eq!(f, DumpFilter::default());
    }

    #[test]
    fn limits_above_the_maximum_are_capped() {
        for value in ["5000", "5001", "1000000", "99999999999999999999999"] {
            assert_eq!(
                parse(&[("limit", value)]).expect(value).limit,
                MAX_DUMP_LIMIT
            );
        }
        assert_eq!(parse(&[("limit", "1")]).expect("1").limit, 1);
        assert_eq!(refused(&[("limit", "0")]).param, "limit");
    }

    #[test]
    fn since_equal_to_until_is_one_instant() {
        let f = parse(&[("since", "5"), ("until", "5")]).expect("valid");
        assert_eq!((f.since, f.until), (Some(5), Some(5)));
        let err = refused(&[("since", "6"), ("until", "5")]);
        assert_eq!(err.to_string(), "since: 6 is after until (5)");
    }

    #[test]
    fn each_invalid_parameter_is_named() {
        let many = vec!["200"; MAX_STATUSES + 1].join(",");
        let long = "a".repeat(MAX_SITE_LIKE_BYTES + 1);
        let cases: Vec<(&str, &str, &str)> = vec![
            ("status", "abc", "status"),
            ("status", "1000", "status"),
            ("status", "-1", "status"),
            ("status", "500,,403", "status"),
            ("status", "500,", "status"),
            ("status", "500) OR (1=1", "status"),
            ("status", &many, "status"),
            ("cross", "yes", "cross"),
            ("cross", "1 OR 1=1", "cross"),
            ("since", "-1", "since"),
            ("since", "0 OR 1=1", "since"),
            ("since", "1.5", "since"),
            ("since", "99999999999999999999999", "since"),
            ("until", "soon", "until"),
            ("until", "1;DROP TABLE x", "until"),
            ("site_like", &long, "site_like"),
            ("site_like", "a\u{0}b", "site_like"),
            ("limit", "-5", "limit"),
            ("limit", "1;DROP TABLE x", "limit"),
            ("limit", "ten", "limit"),
            ("offset", "-1", "offset"),
            ("offset", "10000001", "offset"),
            ("offset", "0 OR 1=1", "offset"),
            ("order", "up", "order"),
            ("order", "asc;--", "order"),
            ("order", "asc, site", "order"),
        ];
        for (param, value, named) in cases {
            let err = refused(&[(param, value)]);
            assert_eq!(err.param, named, "{param}={value}: {err}");
            assert!(err.to_string().starts_with(&format!("{named}: ")), "{err}");
        }
        assert_eq!(
            refused(&[("order", "asc"), ("order", "desc")]).to_string(),
            "order: given more than once"
        );
    }

    #[test]
    fn the_most_statuses_and_the_longest_pattern_pass() {
        let many = (100..100 + MAX_STATUSES)
            .map(|s| s.to_string())
            .collect::<Vec<_>>();
        let f = parse(&[("status", &many.join(","))]).expect("50 statuses");
        assert_eq!(f.statuses.len(), MAX_STATUSES);
        let long = "%".repeat(MAX_SITE_LIKE_BYTES);
        assert!(parse(&[("site_like", &long)]).is_ok());
        assert_eq!(
            parse(&[("offset", "10000000")]).expect("max").offset,
            MAX_OFFSET
        );
    }

    #[test]
    fn sql_in_site_like_is_just_a_pattern() {
        let f = parse(&[("site_like", "%' OR 1=1 --")]).expect("a pattern");
        assert_eq!(f.site_like.as_deref(), Some("%' or 1=1 --"));
    }
}
