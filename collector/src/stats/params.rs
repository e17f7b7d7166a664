//! `/stats` parameters: the site of the path, `node`, `hours`, `points`.
//! Pure. Unknown parameters are ignored and known ones given twice refused,
//! as on the old API ([`crate::api::params`]).

use axum::extract::Query;

use super::{RawQuery, Window};
use crate::api::ApiError;
use crate::api::params::{ParamError, Params, param_error, parse_uint};

/// History span when `hours` is absent.
pub const DEFAULT_HOURS: u64 = 1;
/// Longest history span, in hours (a week).
pub const MAX_HOURS: u64 = 168;
/// Buckets when `points` is absent.
pub const DEFAULT_POINTS: u32 = 60;
/// Most buckets in one history answer.
pub const MAX_POINTS: u32 = 200;
/// Longest node or site name, in bytes.
pub const MAX_NAME_BYTES: usize = 253;

const HOUR_MS: u64 = 3_600_000;

pub(super) fn pairs(query: RawQuery) -> Result<Vec<(String, String)>, ApiError> {
    query
        .map(|Query(pairs)| pairs)
        .map_err(|e| ApiError::bad_request(format!("query: {}", e.body_text())))
}

fn bad(error: ParamError) -> ApiError {
    ApiError::bad_request(error.to_string())
}

/// The site of a `/stats/site/{site}` path, lower-cased as sites are stored.
pub(super) fn site(raw: &str) -> Result<String, ParamError> {
    name("site", raw).map(|s| s.to_ascii_lowercase())
}

/// `node`, checked; `Err` when `required` and absent.
pub(super) fn node(pairs: &[(String, String)], required: bool) -> Result<Option<String>, ApiError> {
    let params = Params::new(pairs, &["node"]).map_err(bad)?;
    match params.get("node") {
        Some(value) => Ok(Some(name("node", value).map_err(bad)?.to_owned())),
        None if required => Err(ApiError::bad_request("node: missing")),
        None => Ok(None),
    }
}

/// A node or site name: 1 to 253 bytes of letters, digits, `.`, `-`, `_`.
fn name<'a>(param: &'static str, value: &'a str) -> Result<&'a str, ParamError> {
    if value.is_empty() {
        return Err(param_error(param, "missing"));
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(param_error(
            param,
            format!("longer than {MAX_NAME_BYTES} bytes"),
        ));
    }
    match value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        Some(c) => Err(param_error(
            param,
            format!("{c:?} is not allowed (letters, digits, `.`, `-`, `_`)"),
        )),
        None => Ok(value),
    }
}

/// `hours` (1..=168, default 1) and `points` (1..=200, default 60) as the
/// window ending at `now_ms`.
pub(super) fn window(pairs: &[(String, String)], now_ms: u64) -> Result<Window, ApiError> {
    let params = Params::new(pairs, &["hours", "points"]).map_err(bad)?;
    let hours = bounded(&params, "hours", DEFAULT_HOURS, MAX_HOURS).map_err(bad)?;
    let points = bounded(
        &params,
        "points",
        u64::from(DEFAULT_POINTS),
        u64::from(MAX_POINTS),
    )
    .map_err(bad)?;
    Ok(Window {
        since_ms: now_ms.saturating_sub(hours * HOUR_MS),
        until_ms: now_ms,
        points: u32::try_from(points).unwrap_or(MAX_POINTS),
    })
}

fn bounded(
    params: &Params<'_>,
    param: &'static str,
    default: u64,
    max: u64,
) -> Result<u64, ParamError> {
    let Some(value) = params.get(param) else {
        return Ok(default);
    };
    match parse_uint(param, value)? {
        Some(0) => Err(param_error(param, "must be at least 1")),
        Some(n) if n <= max => Ok(n),
        _ => Err(param_error(
            param,
            format!("{value} is over the maximum {max}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn refused(pairs: &[(&str, &str)]) -> String {
        window(&q(pairs), 10 * HOUR_MS)
            .expect_err("refused")
            .message
    }

    #[test]
    fn windows_default_and_bound() {
        let now = 200 * HOUR_MS;
        assert_eq!(
            window(&q(&[]), now).expect("defaults"),
            Window {
                since_ms: now - HOUR_MS,
                until_ms: now,
                points: 60
            }
        );
        let w =
            window(&q(&[("hours", "168"), ("points", "200"), ("x", "1")]), now).expect("maximums");
        assert_eq!((w.since_ms, w.points), (now - 168 * HOUR_MS, 200));
        assert_eq!(
            refused(&[("points", "201")]),
            "points: 201 is over the maximum 200"
        );
        assert_eq!(
            refused(&[("hours", "169")]),
            "hours: 169 is over the maximum 168"
        );
        assert_eq!(refused(&[("points", "0")]), "points: must be at least 1");
        assert_eq!(
            refused(&[("hours", "99999999999999999999999")]),
            "hours: 99999999999999999999999 is over the maximum 168"
        );
        assert!(refused(&[("hours", "-1")]).starts_with("hours: \"-1\" is not"));
        assert_eq!(
            refused(&[("points", "5"), ("points", "6")]),
            "points: given more than once"
        );
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(site("Shop.Example").expect("valid"), "shop.example");
        assert_eq!(site("my_site-2").expect("valid"), "my_site-2");
        assert!(
            site("a b")
                .expect_err("space")
                .to_string()
                .starts_with("site: ' '")
        );
        assert!(site("../etc").is_err());
        assert!(site(&"a".repeat(254)).is_err());
        assert_eq!(
            node(&q(&[]), true).expect_err("required").message,
            "node: missing"
        );
        assert_eq!(node(&q(&[]), false).expect("optional"), None);
        assert_eq!(
            node(&q(&[("node", "n-1")]), true).expect("valid"),
            Some("n-1".into())
        );
        assert!(node(&q(&[("node", "n'1")]), true).is_err());
    }
}
