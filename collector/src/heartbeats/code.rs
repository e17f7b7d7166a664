//! Checks as code: `heartbeats.checks_file`, applied at the collector's
//! start.
//!
//! ```toml
//! [[checks]]
//! id = "5bf7e3c1-0f5e-4d3a-9c56-7d1b2e3f4a5b"   # or project + slug
//! name = "Nightly backup"
//! tags = ["backup", "prod"]
//! cron = "30 2 * * *"                            # or period = "1d"
//! tz = "Europe/Paris"
//! grace = "1h"
//! ```
//!
//! A declared check whose newest version differs (definition or ownership)
//! gets a new version (source `config`, actor the file's path); a check whose
//! newest version is the file's and that the file no longer declares gets a
//! deleted version. Applying the same file again writes nothing, whichever
//! replica does it: a check declared by project + slug without an id takes
//! the id of the live check with that slug, or one derived from project and
//! slug, the same on every replica. Pausing does not count as a difference
//! (a paused declared check stays paused). Errors name the file, the check
//! and the field.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use livehead_proto::v1::HeartbeatCheck;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::directory::read_checks;
use super::{FieldError, HeartbeatsState, validate_check};
use crate::store::samples::HeartbeatCheckRow;
use crate::store::{Rows, Store};

#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    #[error("{file}: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Parse { file: PathBuf, message: String },
    #[error("{file}: check {check}: {field}: {reason}")]
    Check {
        file: PathBuf,
        check: String,
        field: String,
        reason: String,
    },
    #[error("{file}: reading the stored checks: {message}")]
    Store { file: PathBuf, message: String },
}

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChecksFile {
    #[serde(default)]
    pub checks: Vec<Declared>,
}

/// One `[[checks]]` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declared {
    pub id: Option<String>,
    pub project: Option<String>,
    pub slug: Option<String>,
    pub name: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, with = "humantime_serde")]
    pub period: Option<Duration>,
    pub cron: Option<String>,
    pub tz: Option<String>,
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
}

/// What applying a file changes: versions to write.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub written: Vec<HeartbeatCheck>,
}

/// Reads and parses `file`.
pub fn read(file: &Path) -> Result<ChecksFile, CodeError> {
    let text = std::fs::read_to_string(file).map_err(|source| CodeError::Read {
        file: file.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| CodeError::Parse {
        file: file.to_owned(),
        message: e.to_string(),
    })
}

/// An id for a check declared by project and slug alone: the SHA-256 of
/// both, shaped as a UUID (version 8), so every replica derives the same.
pub fn derived_id(project: &str, slug: &str) -> String {
    let digest = Sha256::digest(format!("livehead-heartbeat\0{project}\0{slug}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// The versions that make the stored checks (`stored`, every check's newest
/// version, deleted ones included) what `file` declares. Pure: `validate`
/// checks each declared version as the store would take it.
pub fn plan(
    path: &Path,
    file: &ChecksFile,
    stored: &[HeartbeatCheckRow],
    now_ms: u64,
    validate: impl Fn(&HeartbeatCheck) -> Result<HeartbeatCheckRow, FieldError>,
) -> Result<Plan, CodeError> {
    let actor = path.display().to_string();
    let mut plan = Plan::default();
    let mut declared_ids = HashSet::new();
    let mut names = HashSet::new();
    for (index, declared) in file.checks.iter().enumerate() {
        let label = if declared.name.is_empty() {
            format!("#{}", index + 1)
        } else {
            format!("{:?}", declared.name)
        };
        let fail = |field: &str, reason: String| CodeError::Check {
            file: path.to_owned(),
            check: label.clone(),
            field: field.to_owned(),
            reason,
        };
        let record = record(declared, stored, now_ms, &actor).map_err(|(f, r)| fail(f, r))?;
        let row = validate(&record).map_err(|e| fail(&e.field, e.reason))?;
        if !declared_ids.insert(row.check_id.clone()) {
            return Err(fail("id", format!("{} is declared twice", row.check_id)));
        }
        if !names.insert(row.name.clone()) {
            return Err(fail("name", "declared twice".into()));
        }
        if let Some(other) = stored
            .iter()
            .find(|c| !c.deleted && c.name == row.name && c.check_id != row.check_id)
        {
            return Err(fail(
                "name",
                format!(
                    "already the name of check {} ({})",
                    other.check_id, other.source
                ),
            ));
        }
        let current = stored.iter().find(|c| c.check_id == row.check_id);
        if current.is_none_or(|c| differs(c, &row)) {
            let mut record = record;
            // A declared check paused by a person stays paused.
            record.paused = current.is_some_and(|c| c.paused && !c.deleted);
            if let Some(c) = current {
                record.ts_ms = record.ts_ms.max(c.ts + 1);
            }
            plan.written.push(record);
        }
    }
    for gone in stored
        .iter()
        .filter(|c| c.source == "config" && !c.deleted && !declared_ids.contains(&c.check_id))
    {
        let mut record = super::next_version(gone, now_ms, "config", &actor);
        record.deleted = true;
        plan.written.push(record);
    }
    Ok(plan)
}

/// Whether `current` is not the declared check: its definition, or its
/// owner (a check made by the API or a ping becomes the file's).
fn differs(current: &HeartbeatCheckRow, declared: &HeartbeatCheckRow) -> bool {
    let definition = |c: &HeartbeatCheckRow| {
        (
            c.project.clone(),
            c.slug.clone(),
            c.name.clone(),
            c.tags.clone(),
            c.period_s,
            c.cron.clone(),
            c.tz.clone(),
            c.grace_s,
        )
    };
    current.deleted || current.source != "config" || definition(current) != definition(declared)
}

/// The declared check as a version (not yet validated); the field at fault
/// otherwise.
fn record(
    declared: &Declared,
    stored: &[HeartbeatCheckRow],
    now_ms: u64,
    actor: &str,
) -> Result<HeartbeatCheck, (&'static str, String)> {
    let project = declared.project.clone().unwrap_or_default();
    let slug = declared.slug.clone().unwrap_or_default();
    let check_id = match (&declared.id, project.is_empty() || slug.is_empty()) {
        (Some(id), _) => id.clone(),
        (None, false) => stored
            .iter()
            .find(|c| !c.deleted && c.project == project && c.slug == slug)
            .map_or_else(|| derived_id(&project, &slug), |c| c.check_id.clone()),
        (None, true) => return Err(("id", "missing: give an id, or a project and a slug".into())),
    };
    let (period_s, cron) = match (declared.period, &declared.cron) {
        (Some(_), Some(_)) => return Err(("cron", "set beside period: one or the other".into())),
        (None, None) => return Err(("period", "missing: give a period or a cron".into())),
        (Some(period), None) => (period.as_secs(), String::new()),
        (None, Some(cron)) => (0, cron.clone()),
    };
    if declared.tz.is_some() && cron.is_empty() {
        return Err(("tz", "set without a cron".into()));
    }
    Ok(HeartbeatCheck {
        ts_ms: now_ms,
        check_id,
        project,
        slug,
        name: declared.name.clone(),
        tags: declared.tags.join(" "),
        period_s,
        cron,
        tz: declared.tz.clone().unwrap_or_default(),
        grace_s: declared.grace.as_secs(),
        paused: false,
        deleted: false,
        source: "config".into(),
        actor: actor.to_owned(),
    })
}

/// Applies `heartbeats.checks_file`, when set: reads it, compares it with
/// the stored checks and writes what differs. Answers the versions written.
pub async fn apply_checks_file<S: Store>(state: &HeartbeatsState<S>) -> Result<usize, CodeError> {
    let Some(path) = state.inner.config.checks_file.clone() else {
        return Ok(0);
    };
    let file = read(&path)?;
    let _writing = state.inner.writing.lock().await;
    let stored = read_checks(&*state.inner.store)
        .await
        .map_err(|e| CodeError::Store {
            file: path.clone(),
            message: e.to_string(),
        })?;
    let now = state.now();
    let ctx = state.ctx(now);
    let keys = &state.inner.keys;
    let validate = |record: &HeartbeatCheck| {
        let row = validate_check(record, &ctx)?;
        if !row.project.is_empty() && !keys.has_project(&row.project) {
            return Err(FieldError {
                field: "project".into(),
                reason: format!("{:?} has no ping key (heartbeats.ping_keys)", row.project),
            });
        }
        Ok(row)
    };
    let plan = plan(&path, &file, &stored, now, validate)?;
    let rows: Vec<HeartbeatCheckRow> = plan
        .written
        .iter()
        .map(|r| validate_check(r, &ctx))
        .collect::<Result<_, _>>()
        .map_err(|e| CodeError::Check {
            file: path.clone(),
            check: "(deleted)".into(),
            field: e.field,
            reason: e.reason,
        })?;
    let count = rows.len();
    if count > 0 {
        let rows = Rows {
            heartbeat_checks: rows,
            ..Rows::default()
        };
        state.write(rows).await.map_err(|e| CodeError::Store {
            file: path.clone(),
            message: e.to_string(),
        })?;
    }
    tracing::info!(file = %path.display(), declared = file.checks.len(), written = count,
        "checks as code applied");
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Limits;
    use crate::validate::samples::Ctx;

    const NOW: u64 = 1_800_000_000_000;
    const ID: &str = "5bf7e3c1-0f5e-4d3a-9c56-7d1b2e3f4a5b";

    fn parse(text: &str) -> ChecksFile {
        toml::from_str(text).expect("parse")
    }

    fn validate(record: &HeartbeatCheck) -> Result<HeartbeatCheckRow, FieldError> {
        let limits = Limits::default();
        let ctx = Ctx {
            agent: "heartbeats",
            now_ms: NOW,
            limits: &limits,
        };
        validate_check(record, &ctx)
    }

    fn rows(plan: &Plan) -> Vec<HeartbeatCheckRow> {
        plan.written
            .iter()
            .map(|r| validate(r).expect("valid"))
            .collect()
    }

    const FILE: &str = r#"
        [[checks]]
        id = "5BF7E3C1-0F5E-4D3A-9C56-7D1B2E3F4A5B"
        name = "Nightly backup"
        tags = ["backup", "prod"]
        cron = "30 2 * * *"
        tz = "Europe/Paris"
        grace = "1h"

        [[checks]]
        project = "ops"
        slug = "token-refresh"
        name = "Token refresh"
        period = "15m"
        grace = "5m"
    "#;

    #[test]
    fn a_file_applied_twice_writes_once_and_a_removed_check_is_deleted() {
        let path = Path::new("/etc/livehead/checks.toml");
        let first = plan(path, &parse(FILE), &[], NOW, validate).expect("plan");
        let stored = rows(&first);
        assert_eq!(stored.len(), 2);
        assert_eq!(stored[0].check_id, ID);
        assert_eq!(
            (stored[0].cron.as_str(), stored[0].tz.as_str()),
            ("30 2 * * *", "Europe/Paris")
        );
        assert_eq!((stored[1].period_s, stored[1].grace_s), (900, 300));
        assert_eq!(stored[1].check_id, derived_id("ops", "token-refresh"));
        assert_eq!(
            (stored[1].source.as_str(), stored[1].actor.as_str()),
            ("config", "/etc/livehead/checks.toml")
        );

        let again = plan(path, &parse(FILE), &stored, NOW + 1000, validate).expect("plan");
        assert_eq!(again, Plan::default(), "nothing differs");

        let paused: Vec<HeartbeatCheckRow> = stored
            .iter()
            .map(|c| HeartbeatCheckRow {
                paused: true,
                ..c.clone()
            })
            .collect();
        let only_first = FILE
            .split("[[checks]]")
            .take(2)
            .collect::<Vec<_>>()
            .join("[[checks]]");
        let removed = plan(path, &parse(&only_first), &paused, NOW + 2000, validate).expect("plan");
        let written = rows(&removed);
        assert_eq!(written.len(), 1);
        assert_eq!(written[0].check_id, stored[1].check_id);
        assert!(written[0].deleted);
    }

    #[test]
    fn a_changed_declaration_is_a_new_version_that_stays_paused() {
        let path = Path::new("checks.toml");
        let stored: Vec<HeartbeatCheckRow> =
            rows(&plan(path, &parse(FILE), &[], NOW, validate).expect("plan"))
                .into_iter()
                .map(|c| HeartbeatCheckRow { paused: true, ..c })
                .collect();
        let changed = FILE.replace("grace = \"1h\"", "grace = \"2h\"");
        let written =
            rows(&plan(path, &parse(&changed), &stored, NOW + 1, validate).expect("plan"));
        assert_eq!(written.len(), 1);
        assert_eq!((written[0].grace_s, written[0].paused), (7200, true));
    }

    #[test]
    fn errors_name_the_file_the_check_and_the_field() {
        let path = Path::new("checks.toml");
        let cases = [
            (
                FILE.replace("30 2 * * *", "61 2 * * *"),
                "checks.toml: check \"Nightly backup\": cron: ",
            ),
            (
                FILE.replace("Europe/Paris", "Mars/Olympus"),
                "checks.toml: check \"Nightly backup\": tz: ",
            ),
            (
                FILE.replace("period = \"15m\"", "period = \"15m\"\ncron = \"* * * * *\""),
                "checks.toml: check \"Token refresh\": cron: ",
            ),
            (
                FILE.replace("slug = \"token-refresh\"", "slug = \"Token Refresh\""),
                "checks.toml: check \"Token refresh\": slug: ",
            ),
            (
                FILE.replace("Token refresh", "Nightly backup"),
                "checks.toml: check \"Nightly backup\": name: declared twice",
            ),
            (
                FILE.replace("period = \"15m\"", "period = \"400d\""),
                "checks.toml: check \"Token refresh\": period_s: ",
            ),
        ];
        for (text, expected) in cases {
            let error = plan(path, &parse(&text), &[], NOW, validate).expect_err(expected);
            assert!(error.to_string().starts_with(expected), "{error}");
        }
        let taken = HeartbeatCheckRow {
            check_id: "a0000000-0000-4000-8000-000000000000".into(),
            name: "Token refresh".into(),
            source: "api".into(),
            ..HeartbeatCheckRow::default()
        };
        let error = plan(path, &parse(FILE), &[taken], NOW, validate).expect_err("taken");
        assert!(
            error
                .to_string()
                .contains("name: already the name of check a0000000"),
            "{error}"
        );
        let error = toml::from_str::<ChecksFile>(
            "[[checks]]\nname = \"x\"\ngrace = \"1h\"\nperiods = \"1d\"\n",
        )
        .expect_err("unknown key");
        assert!(error.to_string().contains("periods"), "{error}");
    }
}
