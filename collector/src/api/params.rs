//! Query-string parameters as the old worker read them: a parameter with an
//! empty value is absent, a parameter this endpoint does not know is ignored
//! (dashboards add cache busters), a known one given twice is an error.

/// A refused parameter and why; shown as `<param>: <reason>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {reason}")]
pub struct ParamError {
    pub param: &'static str,
    pub reason: String,
}

pub(crate) fn param_error(param: &'static str, reason: impl Into<String>) -> ParamError {
    ParamError {
        param,
        reason: reason.into(),
    }
}

/// The known parameters of one request, each at most once.
#[derive(Debug, Default)]
pub struct Params<'a> {
    values: Vec<(&'static str, &'a str)>,
}

impl<'a> Params<'a> {
    /// Picks the parameters named in `known` out of the decoded query pairs.
    pub fn new(pairs: &'a [(String, String)], known: &[&'static str]) -> Result<Self, ParamError> {
        let mut values: Vec<(&'static str, &'a str)> = Vec::new();
        for (name, value) in pairs {
            let Some(name) = known.iter().find(|k| **k == name.as_str()) else {
                continue;
            };
            if value.is_empty() {
                continue;
            }
            if values.iter().any(|(n, _)| n == name) {
                return Err(param_error(name, "given more than once"));
            }
            values.push((name, value.as_str()));
        }
        Ok(Self { values })
    }

    /// The value of `name`, `None` when absent or empty.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, value)| *value)
    }
}

/// A non-negative decimal integer: ASCII digits only (no sign, no spaces, no
/// SQL). `Ok(None)` when it is one but does not fit in 64 bits.
pub fn parse_uint(param: &'static str, value: &str) -> Result<Option<u64>, ParamError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(param_error(
            param,
            format!("{value:?} is not a non-negative integer"),
        ));
    }
    Ok(value.parse().ok())
}

/// The `vantage` parameter of `/last` and `/dump_last`: a vantage label,
/// `inside` when absent (the old worker's answers are the nodes' view).
pub fn vantage(value: Option<&str>) -> Result<String, ParamError> {
    let value = value.unwrap_or_default();
    livehead_common::vantage::check_vantage(value)
        .map_err(|e| param_error("vantage", e.to_string()))?;
    Ok(livehead_common::vantage::or_inside(value).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn known_parameters_once_unknown_ignored_empty_absent() {
        let q = pairs(&[
            ("a", "1"),
            ("_", "123"),
            ("_", "456"),
            ("b", ""),
            ("c", "x"),
        ]);
        let p = Params::new(&q, &["a", "b", "c"]).expect("valid");
        assert_eq!(p.get("a"), Some("1"));
        assert_eq!(p.get("b"), None);
        assert_eq!(p.get("c"), Some("x"));
        assert_eq!(p.get("_"), None);
    }

    #[test]
    fn a_parameter_given_twice_is_named() {
        let q = pairs(&[("a", "1"), ("a", "2")]);
        let err = Params::new(&q, &["a"]).expect_err("twice");
        assert_eq!(err.param, "a");
        assert_eq!(err.to_string(), "a: given more than once");
        // An empty value is absent, so it does not count as a second one.
        let q = pairs(&[("a", ""), ("a", "2")]);
        assert_eq!(Params::new(&q, &["a"]).expect("once").get("a"), Some("2"));
    }

    #[test]
    fn integers_are_digits_only() {
        assert_eq!(parse_uint("n", "0"), Ok(Some(0)));
        assert_eq!(parse_uint("n", "0042"), Ok(Some(42)));
        assert_eq!(parse_uint("n", "18446744073709551615"), Ok(Some(u64::MAX)));
        assert_eq!(parse_uint("n", "18446744073709551616"), Ok(None));
        for bad in [
            "",
            "-1",
            "+1",
            " 1",
            "1 ",
            "1.5",
            "1e3",
            "0x10",
            "1;DROP TABLE x",
        ] {
            let err = parse_uint("n", bad).expect_err(bad);
            assert_eq!(err.param, "n", "{bad}");
        }
    }

    #[test]
    fn vantage_defaults_to_inside_and_is_checked() {
        assert_eq!(vantage(None).as_deref(), Ok("inside"));
        assert_eq!(vantage(Some("outside")).as_deref(), Ok("outside"));
        let error = vantage(Some("Out side")).expect_err("not a label");
        assert_eq!(error.param, "vantage");
    }
}
