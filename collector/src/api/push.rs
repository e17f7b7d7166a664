//! `POST /push`'s body to rows. Pure: the caller supplies the clock.
//!
//! The body is what `live_head.sh` sends: one JSON object or an array of them,
//! `{"site","status","ms","port","location"?,"ts"}`, with `status` 0 when curl
//! got no answer and `ts` in unix milliseconds. Fields the script may add later
//! are ignored. The request is all or nothing: the first invalid record refuses
//! it, named by its index (in an array) and field.

use std::cell::Cell;
use std::fmt;

use livehead_common::domain::is_cross_domain;
use livehead_common::host::check_host_name;
use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::config::Limits;
use crate::store::ProbeRow;
use crate::validate::{check_text, check_ts};

/// Why a push is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushError {
    /// Not JSON, not the expected shape, or a record with an invalid field:
    /// 400.
    Invalid { message: String, records: usize },
    /// More records than `limits.max_batch_records`: 413.
    TooMany { message: String, records: usize },
}

impl PushError {
    pub fn message(&self) -> &str {
        match self {
            Self::Invalid { message, .. } | Self::TooMany { message, .. } => message,
        }
    }

    /// Records in the refused request (0 when the body was not JSON).
    pub fn records(&self) -> usize {
        match self {
            Self::Invalid { records, .. } | Self::TooMany { records, .. } => *records,
        }
    }
}

/// JSON values (objects, arrays, strings, numbers...) a body may hold per
/// record of `limits.max_batch_records`; a record of the old script has 7.
pub const VALUES_PER_RECORD: usize = 32;

/// Refuses (413) a body with more records than `limits.max_batch_records`, or
/// more JSON values than [`VALUES_PER_RECORD`] per allowed record, before it is
/// parsed into memory: parsed, each value takes tens of bytes, so 4 MiB of
/// `[0,0,...]` would take ~100 MiB. One pass that allocates nothing; a body
/// that is not JSON passes, for [`parse_push`] to name its error.
pub fn check_size(body: &[u8], limits: &Limits) -> Result<(), PushError> {
    let counter = Counter {
        values_left: Cell::new(limits.max_batch_records.saturating_mul(VALUES_PER_RECORD)),
        max_records: limits.max_batch_records,
        records: Cell::new(0),
    };
    let mut json = serde_json::Deserializer::from_slice(body);
    let over_values = Count {
        counter: &counter,
        top: true,
    }
    .deserialize(&mut json)
    .is_err_and(|e| e.is_data());
    let records = counter.records.get();
    if records > limits.max_batch_records {
        return Err(too_many(records, limits));
    }
    if over_values {
        return Err(PushError::TooMany {
            message: format!(
                "body: over {} JSON values ({VALUES_PER_RECORD} per record of \
                 limits.max_batch_records)",
                limits.max_batch_records.saturating_mul(VALUES_PER_RECORD)
            ),
            records,
        });
    }
    Ok(())
}

fn too_many(count: usize, limits: &Limits) -> PushError {
    PushError::TooMany {
        message: format!(
            "body: {count} records, over the limit of {} (limits.max_batch_records)",
            limits.max_batch_records
        ),
        records: count,
    }
}

struct Counter {
    values_left: Cell<usize>,
    max_records: usize,
    /// Elements of the top-level array (1 for an object).
    records: Cell<usize>,
}

/// Counts one JSON value and everything in it against the budget; at the top
/// level also counts the records.
struct Count<'a> {
    counter: &'a Counter,
    top: bool,
}

impl<'de> DeserializeSeed<'de> for Count<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Count<'_> {
    fn take<E: serde::de::Error>(&self) -> Result<(), E> {
        let left = self.counter.values_left.get();
        if left == 0 {
            return Err(E::custom("too many JSON values"));
        }
        self.counter.values_left.set(left - 1);
        Ok(())
    }

    fn inner(&self) -> Count<'_> {
        Count {
            counter: self.counter,
            top: false,
        }
    }
}

impl<'de> Visitor<'de> for Count<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        self.take()
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        self.take()
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        self.take()
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        self.take()
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        self.take()
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.take()
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.take()?;
        if !self.top {
            while seq.next_element_seed(self.inner())?.is_some() {}
            return Ok(());
        }
        // Past the record limit the body is refused anyway: count the rest
        // without looking inside, for the message.
        loop {
            let more = if self.counter.records.get() < self.counter.max_records {
                seq.next_element_seed(self.inner())?.is_some()
            } else {
                seq.next_element::<IgnoredAny>()?.is_some()
            };
            if !more {
                return Ok(());
            }
            self.counter.records.set(self.counter.records.get() + 1);
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.take()?;
        if self.top {
            self.counter.records.set(1);
        }
        while map.next_key::<IgnoredAny>()?.is_some() {
            map.next_value_seed(self.inner())?;
        }
        Ok(())
    }
}

/// One record as sent. Every field is optional here so that a missing one is
/// reported by name; unknown fields are ignored.
#[derive(Debug, Deserialize)]
struct WireRecord {
    site: Option<String>,
    status: Option<i64>,
    ms: Option<i64>,
    port: Option<i64>,
    location: Option<String>,
    ts: Option<i64>,
}

/// A field of one record and what is wrong with it.
struct FieldError {
    field: String,
    reason: String,
}

fn field_error(field: &str, reason: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// Parses and validates the body of one push from `agent` at collector time
/// `now_ms`: every record becomes a row, or nothing does.
pub fn parse_push(
    body: &[u8],
    agent: &str,
    now_ms: u64,
    limits: &Limits,
) -> Result<Vec<ProbeRow>, PushError> {
    let invalid = |message: String, records: usize| PushError::Invalid { message, records };
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("body: not valid JSON: {e}"), 0))?;
    let (records, in_array) = match value {
        Value::Object(_) => (vec![value], false),
        Value::Array(items) => (items, true),
        _ => {
            return Err(invalid(
                "body: expected a JSON object or an array of objects".into(),
                0,
            ));
        }
    };
    let count = records.len();
    if count > limits.max_batch_records {
        return Err(too_many(count, limits));
    }
    records
        .into_iter()
        .enumerate()
        .map(|(index, record)| {
            check_record(record, agent, now_ms, limits).map_err(|e| {
                let at = if in_array {
                    format!("[{index}]")
                } else {
                    String::new()
                };
                let sep = if at.is_empty() || e.field.is_empty() {
                    ""
                } else {
                    "."
                };
                invalid(format!("{at}{sep}{}: {}", e.field, e.reason), count)
            })
        })
        .collect()
}

fn check_record(
    record: Value,
    agent: &str,
    now_ms: u64,
    limits: &Limits,
) -> Result<ProbeRow, FieldError> {
    if !record.is_object() {
        return Err(field_error("", "expected a JSON object"));
    }
    let wire: WireRecord = serde_path_to_error::deserialize(record)
        .map_err(|e| field_error(&e.path().to_string(), e.into_inner().to_string()))?;
    let required =
        |field: &str, value: Option<i64>| value.ok_or_else(|| field_error(field, "missing"));

    let site = wire
        .site
        .ok_or_else(|| field_error("site", "missing"))?
        .to_ascii_lowercase();
    check_host_name(&site).map_err(|e| field_error("site", e.to_string()))?;

    let status = required("status", wire.status)?;
    let status = u16::try_from(status)
        .ok()
        .filter(|s| *s == 0 || (100..=599).contains(s))
        .ok_or_else(|| {
            field_error(
                "status",
                format!("{status} is not an HTTP status (100-599, or 0)"),
            )
        })?;

    let ms = required("ms", wire.ms)?;
    let max_ms = u64::try_from(limits.max_latency.as_millis()).unwrap_or(u64::MAX);
    let ms = u64::try_from(ms).map_err(|_| {
        field_error(
            "ms",
            format!("{ms} is not a latency (0 or more milliseconds)"),
        )
    })?;
    let ms_u32 = u32::try_from(ms)
        .ok()
        .filter(|_| ms <= max_ms)
        .ok_or_else(|| {
            field_error(
                "ms",
                format!("{ms} ms is over the {max_ms} ms limit (limits.max_latency)"),
            )
        })?;

    let port = required("port", wire.port)?;
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| field_error("port", format!("{port} is not a TCP port (1-65535)")))?;

    let location = wire.location.unwrap_or_default();
    check_text("location", &location, limits.max_location_bytes)
        .map_err(|e| field_error("location", e.reason))?;

    let ts = required("ts", wire.ts)?;
    let ts = u64::try_from(ts)
        .map_err(|_| field_error("ts", format!("{ts} is not a unix time in milliseconds")))?;
    check_ts(ts, now_ms, limits).map_err(|e| field_error("ts", e.reason))?;

    Ok(ProbeRow {
        cross: u8::from(is_cross_domain(&site, &location)),
        site,
        status,
        ms: ms_u32,
        port,
        location,
        ts,
        latency_us: ms.saturating_mul(1000),
        connect_us: 0,
        first_byte_us: 0,
        error: if status > 0 { "" } else { "other" }.to_owned(),
        method: String::new(),
        target: String::new(),
        cert_expiry: 0,
        agent: agent.to_owned(),
        // The old script runs in the pods (the default vantage) and checks
        // neither certificates nor content.
        ..ProbeRow::default()
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const NOW: u64 = 1_735_648_020_000;
    const AGENT: &str = "push:pods-eu";

    /// The old script's payload, verbatim.
    const SCRIPT: &str = r#"[{"site":"a.com","status":200,"ms":18,"port":8080,"ts":1735648000000},{"site":"b.com","status":301,"ms":12,"port":8080,"location":"https://www.b.com/","ts":1735648010000}]"#;

    fn parse(body: &str) -> Result<Vec<ProbeRow>, PushError> {
        parse_push(body.as_bytes(), AGENT, NOW, &Limits::default())
    }

    fn message(body: &str) -> String {
        match parse(body) {
            Ok(rows) => panic!("{body} should be refused, got {rows:?}"),
            Err(PushError::Invalid { message, .. }) => message,
            Err(e @ PushError::TooMany { .. }) => panic!("{body}: expected 400, got {e:?}"),
        }
    }

    fn record(fields: &str) -> String {
        format!(r#"{{"site":"a.com","status":200,"ms":18,"port":8080,"ts":{NOW}{fields}}}"#)
    }

    #[test]
    fn the_old_scripts_array_becomes_rows() {
        let rows = parse(SCRIPT).expect("valid");
        assert_eq!(
            rows,
            vec![
                ProbeRow {
                    site: "a.com".into(),
                    status: 200,
                    ms: 18,
                    port: 8080,
                    location: String::new(),
                    cross: 0,
                    ts: 1_735_648_000_000,
                    latency_us: 18_000,
                    agent: AGENT.into(),
                    ..ProbeRow::default()
                },
                ProbeRow {
                    site: "b.com".into(),
                    status: 301,
                    ms: 12,
                    port: 8080,
                    location: "https://www.b.com/".into(),
                    cross: 0,
                    ts: 1_735_648_010_000,
                    latency_us: 12_000,
                    agent: AGENT.into(),
                    ..ProbeRow::default()
                },
            ]
        );
    }

    #[test]
    fn a_single_object_is_one_row() {
        let rows = parse(&record(r#","location":"https://elsewhere.net/x""#)).expect("valid");
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].cross, rows[0].error.as_str()), (1, ""));
    }

    #[test]
    fn status_zero_is_a_probe_without_answer() {
        let body = format!(r#"{{"site":"A.Com","status":0,"ms":0,"port":443,"ts":{NOW}}}"#);
        let rows = parse(&body).expect("valid");
        assert_eq!(rows[0].site, "a.com");
        assert_eq!((rows[0].status, rows[0].error.as_str()), (0, "other"));
    }

    #[test]
    fn an_empty_array_is_no_rows() {
        assert_eq!(parse("[]"), Ok(vec![]));
    }

    #[test]
    fn null_location_and_unknown_fields_are_fine() {
        let rows = parse(&record(
            r#","location":null,"http_version":"2","extra":{"a":1}"#,
        ))
        .expect("valid");
        assert_eq!((rows[0].location.as_str(), rows[0].cross), ("", 0));
    }

    #[test]
    fn bad_json_and_bad_shapes_name_the_body() {
        for body in ["", "{", "not json", "[{]"] {
            assert!(message(body).starts_with("body: not valid JSON"), "{body}");
        }
        for body in ["1", "\"a.com\"", "null", "true"] {
            assert_eq!(
                message(body),
                "body: expected a JSON object or an array of objects"
            );
        }
        assert_eq!(
            message(&format!("[{}, 5]", record(""))),
            "[1]: expected a JSON object"
        );
        assert_eq!(message("[[]]"), "[0]: expected a JSON object");
    }

    #[test]
    fn each_bad_field_is_named() {
        let long = format!(r#","location":"https://a.com/{}""#, "x".repeat(3000));
        let cases: Vec<(String, &str)> = vec![
            (
                r#"{"status":200,"ms":1,"port":80,"ts":1}"#.into(),
                "site: missing",
            ),
            (
                format!(r#"{{"site":"a.com","ms":1,"port":80,"ts":{NOW}}}"#),
                "status: missing",
            ),
            (
                format!(r#"{{"site":"a.com","status":null,"ms":1,"port":80,"ts":{NOW}}}"#),
                "status: missing",
            ),
            (
                format!(r#"{{"site":"a.com","status":200,"port":80,"ts":{NOW}}}"#),
                "ms: missing",
            ),
            (
                format!(r#"{{"site":"a.com","status":200,"ms":1,"ts":{NOW}}}"#),
                "port: missing",
            ),
            (
                r#"{"site":"a.com","status":200,"ms":1,"port":80}"#.into(),
                "ts: missing",
            ),
            (
                record("").replace(r#""a.com""#, r#""bad site.com""#),
                "site: ",
            ),
            (record("").replace(r#""a.com""#, r#""""#), "site: empty"),
            (record("").replace(r#""a.com""#, "5"), "site: invalid type"),
            (
                record("").replace(":200", ":700"),
                "status: 700 is not an HTTP status (100-599, or 0)",
            ),
            (record("").replace(":200", ":99"), "status: 99 is not"),
            (record("").replace(":200", ":-1"), "status: -1 is not"),
            (
                record("").replace(":200", r#":"200""#),
                "status: invalid type",
            ),
            (record("").replace(":200", ":200.5"), "status: invalid type"),
            (record("").replace(":18", ":-3"), "ms: -3 is not a latency"),
            (
                record("").replace(":18", ":600001"),
                "ms: 600001 ms is over",
            ),
            (record("").replace(":18", ":1.5"), "ms: invalid type"),
            (
                record("").replace(":8080", ":0"),
                "port: 0 is not a TCP port",
            ),
            (record("").replace(":8080", ":65536"), "port: 65536 is not"),
            (record(r#","location":5"#), "location: invalid type"),
            (
                record(&long),
                "location: 3014 bytes, over the 2048-byte limit",
            ),
            (
                record(r#","location":"a\nb""#),
                "location: contains control",
            ),
            (
                record("").replace(&NOW.to_string(), "1000"),
                "ts: 1000 is more than",
            ),
            (
                record("").replace(&NOW.to_string(), &(NOW + 3_600_000).to_string()),
                "in the future",
            ),
            (record("").replace(&NOW.to_string(), "-1"), "ts: -1 is not"),
            (
                record("").replace(&NOW.to_string(), "1e12"),
                "ts: invalid type",
            ),
            (
                record("").replace(&NOW.to_string(), "99999999999999999999"),
                "ts: invalid type",
            ),
        ];
        for (body, want) in cases {
            let got = message(&body);
            assert!(got.starts_with(want) || got.contains(want), "{body}: {got}");
            assert!(!got.starts_with('['), "a single object has no index: {got}");
        }
    }

    #[test]
    fn one_bad_record_refuses_the_array_with_its_index() {
        let body = format!(
            "[{},{},{},{}]",
            record(""),
            record(""),
            record(""),
            record("").replace(":200", ":700")
        );
        match parse(&body) {
            Err(PushError::Invalid { message, records }) => {
                assert_eq!(
                    message,
                    "[3].status: 700 is not an HTTP status (100-599, or 0)"
                );
                assert_eq!(records, 4);
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn too_many_records_is_413() {
        let limits = Limits {
            max_batch_records: 2,
            ..Limits::default()
        };
        let body = format!("[{},{},{}]", record(""), record(""), record(""));
        match parse_push(body.as_bytes(), AGENT, NOW, &limits) {
            Err(PushError::TooMany { message, records }) => {
                assert_eq!(
                    message,
                    "body: 3 records, over the limit of 2 (limits.max_batch_records)"
                );
                assert_eq!(records, 3);
            }
            other => panic!("expected 413, got {other:?}"),
        }
        let two = format!("[{},{}]", record(""), record(""));
        assert_eq!(
            parse_push(two.as_bytes(), AGENT, NOW, &limits).map(|r| r.len()),
            Ok(2)
        );
    }

    #[test]
    fn bodies_that_would_expand_in_memory_are_refused_unparsed() {
        let limits = Limits {
            max_batch_records: 3,
            ..Limits::default()
        };
        let check = |body: &str| check_size(body.as_bytes(), &limits);
        let four = format!(
            "[{},{},{},{}]",
            record(""),
            record(""),
            record(""),
            record("")
        );
        assert_eq!(
            check(&four).map_err(|e| e.message().to_owned()),
            Err("body: 4 records, over the limit of 3 (limits.max_batch_records)".into())
        );
        let zeros = format!("[{}0]", "0,".repeat(5000));
        assert_eq!(check(&zeros).map_err(|e| e.records()), Err(5001));
        let nested = format!("[[{}0]]", "0,".repeat(200));
        let error = check(&nested).expect_err("too many values");
        assert_eq!(
            (error.message(), error.records()),
            (
                "body: over 96 JSON values (32 per record of limits.max_batch_records)",
                0
            )
        );
        let in_object = format!(r#"{{"site":[{}0]}}"#, "0,".repeat(200));
        assert!(check(&in_object).is_err());
        let three = format!("[{},{},{}]", record(""), record(""), record(""));
        assert_eq!(check(&three), Ok(()));
        assert_eq!(check(&record("")), Ok(()));
        for not_json in ["", "[", "{]", "nope", "[1,"] {
            assert_eq!(check(not_json), Ok(()), "{not_json}: left to parse_push");
        }
    }

    #[test]
    fn limits_come_from_the_configuration() {
        let limits = Limits {
            max_latency: Duration::from_millis(100),
            max_location_bytes: 10,
            max_clock_skew: Duration::ZERO,
            max_age: Duration::from_secs(1),
            ..Limits::default()
        };
        let check = |body: String| parse_push(body.as_bytes(), AGENT, NOW, &limits);
        assert!(check(record("").replace(":18", ":100")).is_ok());
        assert!(check(record("").replace(":18", ":101")).is_err());
        assert!(check(record(r#","location":"/123456789""#)).is_ok());
        assert!(check(record(r#","location":"/1234567890""#)).is_err());
        let ts = |t: u64| record("").replace(&NOW.to_string(), &t.to_string());
        assert!(check(ts(NOW - 1000)).is_ok());
        assert!(check(ts(NOW - 1001)).is_err());
        assert!(check(ts(NOW + 1)).is_err());
    }
}
