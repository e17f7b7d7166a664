//! Record validation: pure functions from wire records to storable rows, each
//! refusal naming the field and the reason.

use livehead_proto::v1::{
    CertTrust, ContentOutcome, ProbeError, ProbeMethod, ProbeResult, PushRequest, RecordRejection,
    record::Kind,
};

use livehead_common::host::check_host_name;
use livehead_common::vantage::{self, check_vantage};

use crate::config::Limits;
use crate::store::{ProbeRow, Rows};

pub mod alerts;
pub mod heartbeats;
pub mod samples;
pub mod watchdog;

/// A refused record's field and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: &'static str,
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Invalid {
    Invalid {
        field,
        reason: reason.into(),
    }
}

/// The batch split into storable rows (one set per kind) and rejections (by
/// record index).
#[derive(Debug, Default)]
pub struct Checked {
    pub rows: Rows,
    pub rejected: Vec<RecordRejection>,
}

/// Validates every record of `batch` from `agent` at collector time `now_ms`.
pub fn check_batch(batch: &PushRequest, agent: &str, now_ms: u64, limits: &Limits) -> Checked {
    let mut out = Checked::default();
    for (index, record) in batch.records.iter().enumerate() {
        let result = match &record.kind {
            Some(Kind::Probe(p)) => {
                check_probe(p, agent, now_ms, limits).map(|row| out.rows.probes.push(row))
            }
            Some(kind) => {
                samples::check_sample(kind, agent, now_ms, limits, &mut out.rows).map(drop)
            }
            None => Err(invalid("kind", "empty record (unknown record type?)")),
        };
        if let Err(e) = result {
            out.rejected.push(RecordRejection {
                index: u32::try_from(index).unwrap_or(u32::MAX),
                field: e.field.into(),
                reason: e.reason,
            });
        }
    }
    out
}

/// One probe result to a row, or the first thing wrong with it.
pub fn check_probe(
    p: &ProbeResult,
    agent: &str,
    now_ms: u64,
    limits: &Limits,
) -> Result<ProbeRow, Invalid> {
    check_site(&p.site)?;
    let error = ProbeError::try_from(p.error)
        .map_err(|_| invalid("probe.error", format!("unknown error kind {}", p.error)))?;
    let method = ProbeMethod::try_from(p.method)
        .map_err(|_| invalid("probe.method", format!("unknown method {}", p.method)))?;
    let status = check_status(p.status, error)?;
    let port = u16::try_from(p.port)
        .ok()
        .filter(|port| *port != 0)
        .ok_or_else(|| {
            invalid(
                "probe.port",
                format!("{} is not a TCP port (1-65535)", p.port),
            )
        })?;
    let max_us = limits.max_latency.as_micros() as u64;
    for (field, value) in [
        ("probe.latency_us", p.latency_us),
        ("probe.connect_us", p.connect_us),
        ("probe.first_byte_us", p.first_byte_us),
    ] {
        if value > max_us {
            return Err(invalid(
                field,
                format!("{value} µs is over the {max_us} µs limit"),
            ));
        }
    }
    check_ts(p.ts_ms, now_ms, limits)?;
    check_text("probe.location", &p.location, limits.max_location_bytes)?;
    check_text("probe.target", &p.target, limits.max_target_bytes)?;
    if p.cert_expiry_ms > MAX_CERT_EXPIRY_MS {
        return Err(invalid(
            "probe.cert_expiry_ms",
            format!("{} is after the year 9999", p.cert_expiry_ms),
        ));
    }
    let checks = check_trust_and_content(p, limits)?;
    check_vantage(&p.vantage).map_err(|e| invalid("probe.vantage", e.to_string()))?;
    Ok(ProbeRow {
        site: p.site.to_ascii_lowercase(),
        status,
        ms: u32::try_from(p.latency_us / 1000).unwrap_or(u32::MAX),
        port,
        location: p.location.clone(),
        cross: u8::from(p.cross_domain),
        ts: p.ts_ms,
        latency_us: p.latency_us,
        connect_us: p.connect_us,
        first_byte_us: p.first_byte_us,
        error: error.as_label().into(),
        method: method.as_label().into(),
        target: p.target.clone(),
        cert_expiry: p.cert_expiry_ms,
        agent: agent.into(),
        cert_trust: checks.cert_trust.into(),
        cert_error: p.cert_error.clone(),
        content: checks.content.into(),
        content_failure: p.content_failure.clone(),
        content_excerpt: p.content_excerpt.clone(),
        vantage: vantage::or_inside(&p.vantage).into(),
    })
}

/// Most bytes of a probe's `content_excerpt` (what the proto promises).
pub const MAX_CONTENT_EXCERPT_BYTES: usize = 200;

/// The stored labels of a probe's certificate trust and content outcome.
struct Checks {
    cert_trust: &'static str,
    content: &'static str,
}

/// A probe's trust and content fields: known enums (UNSPECIFIED, "not
/// checked", included), one-line texts within their limits. Texts are not
/// tied to their verdict: a probe is never refused for an extra word.
fn check_trust_and_content(p: &ProbeResult, limits: &Limits) -> Result<Checks, Invalid> {
    let cert_trust = CertTrust::try_from(p.cert_trust).map_err(|_| {
        invalid(
            "probe.cert_trust",
            format!("unknown certificate trust {}", p.cert_trust),
        )
    })?;
    let content = ContentOutcome::try_from(p.content).map_err(|_| {
        invalid(
            "probe.content",
            format!("unknown content outcome {}", p.content),
        )
    })?;
    check_text("probe.cert_error", &p.cert_error, limits.max_text_bytes)?;
    check_text(
        "probe.content_failure",
        &p.content_failure,
        limits.max_text_bytes,
    )?;
    check_text(
        "probe.content_excerpt",
        &p.content_excerpt,
        MAX_CONTENT_EXCERPT_BYTES,
    )?;
    Ok(Checks {
        cert_trust: cert_trust.as_label(),
        content: content.as_label(),
    })
}

/// Batch sequence numbers are stored as signed 64-bit integers (SQLite's only
/// kind), so the top bit is refused here rather than failing the store write of
/// every batch grouped with it.
pub fn check_seq(seq: u64) -> Result<(), Invalid> {
    if seq > i64::MAX as u64 {
        return Err(invalid(
            "seq",
            format!("batch seq {seq} is over {}, the largest stored", i64::MAX),
        ));
    }
    Ok(())
}

/// 9999-12-31T23:59:59.999Z in unix ms: the latest certificate expiry
/// accepted. Larger values are no date (SQLite would also silently store
/// anything above 2^63 - 1 as 2^63 - 1).
pub const MAX_CERT_EXPIRY_MS: u64 = 253_402_300_799_999;

/// A site must be a host name (the rule shared with the agent's discovery).
pub fn check_site(site: &str) -> Result<(), Invalid> {
    check_host_name(site).map_err(|e| invalid("probe.site", e.to_string()))
}

fn check_status(status: u32, error: ProbeError) -> Result<u16, Invalid> {
    match (status, error) {
        (0, ProbeError::Unspecified) => {
            Err(invalid("probe.status", "0 (no answer) needs an error kind"))
        }
        (0, _) => Ok(0),
        (100..=599, ProbeError::Unspecified) => Ok(status as u16),
        (100..=599, _) => Err(invalid(
            "probe.error",
            "an answered probe (status set) cannot carry an error",
        )),
        _ => Err(invalid(
            "probe.status",
            format!("{status} is not an HTTP status (100-599, or 0)"),
        )),
    }
}

/// A timestamp (unix ms) must lie within `max_clock_skew` ahead of and
/// `max_age` behind `now_ms`.
pub fn check_ts(ts: u64, now_ms: u64, limits: &Limits) -> Result<(), Invalid> {
    let ahead = limits.max_clock_skew.as_millis() as u64;
    let behind = limits.max_age.as_millis() as u64;
    if ts > now_ms.saturating_add(ahead) {
        return Err(invalid(
            "probe.ts_ms",
            format!("{ts} is more than {ahead} ms in the future"),
        ));
    }
    if ts < now_ms.saturating_sub(behind) {
        return Err(invalid(
            "probe.ts_ms",
            format!("{ts} is more than {behind} ms in the past"),
        ));
    }
    Ok(())
}

/// Text of at most `max` bytes without control characters.
pub fn check_text(field: &'static str, value: &str, max: usize) -> Result<(), Invalid> {
    if value.len() > max {
        return Err(invalid(
            field,
            format!("{} bytes, over the {max}-byte limit", value.len()),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(field, "contains control characters"));
    }
    Ok(())
}

/// Text kept as it is but for its length: logs hold newlines, tabs and
/// terminal escapes.
pub fn check_log(field: &'static str, value: &str, max: usize) -> Result<(), Invalid> {
    if value.len() > max {
        return Err(invalid(
            field,
            format!("{} bytes, over the {max}-byte limit", value.len()),
        ));
    }
    Ok(())
}

/// An enum's wire value to its stored name: known and not UNSPECIFIED.
fn label<E: TryFrom<i32>>(
    field: &'static str,
    value: i32,
    name: fn(E) -> Option<&'static str>,
) -> Result<String, Invalid> {
    E::try_from(value)
        .ok()
        .and_then(name)
        .map(str::to_owned)
        .ok_or_else(|| invalid(field, format!("{value} is not a known value")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use livehead_proto::v1::Record;

    const NOW: u64 = 1_800_000_000_000;

    type Mutation = fn(&mut ProbeResult);

    fn good() -> ProbeResult {
        ProbeResult {
            site: "Example.com".into(),
            status: 301,
            method: ProbeMethod::Head as i32,
            latency_us: 12_345,
            connect_us: 100,
            first_byte_us: 12_000,
            port: 8080,
            location: "https://other.net/".into(),
            cross_domain: true,
            ts_ms: NOW - 1000,
            target: "10.0.0.7:8080".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_valid_probe_becomes_a_row() {
        let row = check_probe(&good(), "node-1", NOW, &Limits::default()).expect("valid");
        assert_eq!(row.site, "example.com");
        assert_eq!(
            (row.status, row.ms, row.port, row.cross),
            (301, 12, 8080, 1)
        );
        assert_eq!((row.method.as_str(), row.error.as_str()), ("HEAD", ""));
        assert_eq!(row.agent, "node-1");
    }

    #[test]
    fn each_bad_field_is_named() {
        let limits = Limits::default();
        let cases: Vec<(Mutation, &str)> = vec![
            (|p| p.site = "bad site.com".into(), "probe.site"),
            (|p| p.site = String::new(), "probe.site"),
            (|p| p.site = format!("{}.com", "a".repeat(64)), "probe.site"),
            (|p| p.status = 999, "probe.status"),
            (|p| p.status = 0, "probe.status"),
            (|p| p.error = ProbeError::Timeout as i32, "probe.error"),
            (|p| p.error = 42, "probe.error"),
            (|p| p.port = 70_000, "probe.port"),
            (|p| p.port = 0, "probe.port"),
            (|p| p.latency_us = 3_600_000_000, "probe.latency_us"),
            (|p| p.ts_ms = NOW + 3_600_000, "probe.ts_ms"),
            (|p| p.ts_ms = 5, "probe.ts_ms"),
            (|p| p.location = "x".repeat(5000), "probe.location"),
            (|p| p.location = "a\nb".into(), "probe.location"),
            (|p| p.cert_trust = 7, "probe.cert_trust"),
            (|p| p.vantage = "Outside".into(), "probe.vantage"),
            (|p| p.vantage = "o".repeat(33), "probe.vantage"),
            (|p| p.cert_error = "x".repeat(2049), "probe.cert_error"),
            (|p| p.cert_error = "bad\r\nchain".into(), "probe.cert_error"),
            (|p| p.content = 3, "probe.content"),
            (
                |p| p.content_failure = "x".repeat(2049),
                "probe.content_failure",
            ),
            (
                |p| p.content_failure = "tab\there".into(),
                "probe.content_failure",
            ),
            (
                |p| p.content_excerpt = "x".repeat(201),
                "probe.content_excerpt",
            ),
            (
                |p| p.content_excerpt = "<p>\n".into(),
                "probe.content_excerpt",
            ),
        ];
        for (mutate, field) in cases {
            let mut p = good();
            mutate(&mut p);
            let err = check_probe(&p, "a", NOW, &limits).expect_err(field);
            assert_eq!(err.field, field, "{err:?}");
        }
    }

    #[test]
    fn an_empty_vantage_is_stored_as_inside() {
        let limits = Limits::default();
        let row = check_probe(&good(), "a", NOW, &limits).expect("valid");
        assert_eq!(row.vantage, "inside");
        let mut p = good();
        p.vantage = "outside".into();
        let row = check_probe(&p, "a", NOW, &limits).expect("valid");
        assert_eq!(row.vantage, "outside");
    }

    #[test]
    fn trust_and_content_are_stored_by_name() {
        let limits = Limits::default();
        let row = check_probe(&good(), "a", NOW, &limits).expect("valid");
        let empty = [
            &row.cert_trust,
            &row.cert_error,
            &row.content,
            &row.content_failure,
            &row.content_excerpt,
        ];
        assert!(empty.iter().all(|f| f.is_empty()), "{row:?}");
        let mut p = good();
        p.cert_trust = CertTrust::UnknownIssuer as i32;
        p.cert_error = "invalid peer certificate: UnknownIssuer".into();
        p.content = ContentOutcome::Failed as i32;
        p.content_failure = "contains \"critical error\"".into();
        p.content_excerpt = "é".repeat(100);
        let row = check_probe(&p, "a", NOW, &limits).expect("valid");
        assert_eq!(
            (row.cert_trust.as_str(), row.content.as_str()),
            ("unknown_issuer", "failed")
        );
        assert_eq!(row.cert_error, p.cert_error);
        assert_eq!(row.content_failure, p.content_failure);
        assert_eq!(row.content_excerpt.len(), MAX_CONTENT_EXCERPT_BYTES);
    }

    #[test]
    fn sequence_numbers_fit_a_signed_64_bit_integer() {
        assert!(check_seq(0).is_ok());
        assert!(check_seq(i64::MAX as u64).is_ok());
        let err = check_seq(1 << 63).expect_err("top bit");
        assert_eq!(err.field, "seq");
        assert!(err.reason.contains("9223372036854775808"), "{err:?}");
    }

    #[test]
    fn invalid_records_do_not_sink_valid_ones() {
        let mut bad = good();
        bad.site = "no spaces allowed".into();
        let rec = |p| Record {
            kind: Some(Kind::Probe(p)),
        };
        let batch = PushRequest {
            trace_context: Default::default(),
            agent_id: "a".into(),
            seq: 1,
            records: vec![rec(good()), rec(bad), Record { kind: None }, rec(good())],
        };
        let checked = check_batch(&batch, "a", NOW, &Limits::default());
        assert_eq!(checked.rows.probes.len(), 2);
        let rejected: Vec<_> = checked
            .rejected
            .iter()
            .map(|r| (r.index, r.field.as_str()))
            .collect();
        assert_eq!(rejected, [(1, "probe.site"), (2, "kind")]);
    }

    #[test]
    fn cert_expiry_is_at_most_the_year_9999() {
        let limits = Limits::default();
        let mut p = good();
        p.cert_expiry_ms = MAX_CERT_EXPIRY_MS;
        assert!(check_probe(&p, "a", NOW, &limits).is_ok());
        p.cert_expiry_ms = u64::MAX;
        let err = check_probe(&p, "a", NOW, &limits).expect_err("u64::MAX");
        assert_eq!(err.field, "probe.cert_expiry_ms");
    }
}
