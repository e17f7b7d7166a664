//! What a ping's URL says, Healthchecks' shapes: `/ping/<uuid>[/<action>]`
//! and `/ping/<ping-key>/<slug>[/<action>]`, the action being `start`,
//! `fail`, `log` or an exit status 0-255 (none: a success); and its query,
//! `?rid=<uuid>` and `?create=1`. Pure: the handler looks the check up.
//!
//! A first segment that parses as a UUID is a check id, so a ping key must
//! not be a UUID.

use livehead_proto::v1::PingKind;

use crate::validate::heartbeats::uuid;

/// Which check a ping names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The check's id, in its stored form.
    Id(String),
    /// A ping key (still secret: compared by its hash) and a slug.
    Slug { key: String, slug: String },
}

/// A ping's URL, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingPath {
    pub target: Target,
    pub kind: PingKind,
    /// Set on exit pings only.
    pub exit_status: u32,
}

/// Why a URL is refused: `NotFound` for shapes that are no ping (404, as
/// for an unknown check), `Bad` naming what is wrong (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Bad(String),
}

/// The part of the path after `/ping/`.
pub fn parse(rest: &str) -> Result<PingPath, PathError> {
    let segments: Vec<&str> = rest.split('/').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(PathError::NotFound);
    }
    let (target, action) = match segments.as_slice() {
        [first, tail @ ..] if uuid("check", first).is_ok() => match tail {
            [] => (id(first), None),
            [action] => (id(first), Some(*action)),
            _ => return Err(PathError::NotFound),
        },
        [key, slug, tail @ ..] => {
            let target = Target::Slug {
                key: (*key).to_owned(),
                slug: (*slug).to_owned(),
            };
            match tail {
                [] => (target, None),
                [action] => (target, Some(*action)),
                _ => return Err(PathError::NotFound),
            }
        }
        _ => return Err(PathError::NotFound),
    };
    let (kind, exit_status) = action.map_or(Ok((PingKind::Success, 0)), parse_action)?;
    Ok(PingPath {
        target,
        kind,
        exit_status,
    })
}

fn id(value: &str) -> Target {
    Target::Id(uuid("check", value).unwrap_or_default())
}

fn parse_action(action: &str) -> Result<(PingKind, u32), PathError> {
    Ok(match action {
        "start" => (PingKind::Start, 0),
        "fail" => (PingKind::Fail, 0),
        "log" => (PingKind::Log, 0),
        digits if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            match digits.parse::<u32>() {
                Ok(status) if status <= 255 => (PingKind::Exit, status),
                _ => {
                    return Err(PathError::Bad(format!(
                        "exit status: {digits} is not within 0-255"
                    )));
                }
            }
        }
        _ => return Err(PathError::NotFound),
    })
}

/// The ping's query: `rid` (a UUID, or empty) and `create`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PingQuery {
    pub rid: String,
    pub create: bool,
}

/// `?rid=&create=`; other parameters are ignored, as Healthchecks does.
pub fn parse_query(pairs: &[(String, String)]) -> Result<PingQuery, PathError> {
    let mut query = PingQuery::default();
    for (name, value) in pairs {
        match name.as_str() {
            "rid" if !value.is_empty() => {
                query.rid = uuid("rid", value).map_err(|e| {
                    PathError::Bad(format!("rid: {value:?} is not a UUID ({})", e.reason))
                })?;
            }
            "create" => query.create = value == "1",
            _ => {}
        }
    }
    Ok(query)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "5bf7e3c1-0f5e-4d3a-9c56-7d1b2e3f4a5b";

    fn ok(rest: &str) -> (Target, PingKind, u32) {
        let p = parse(rest).expect(rest);
        (p.target, p.kind, p.exit_status)
    }

    #[test]
    fn every_shape_of_healthchecks() {
        let id = || Target::Id(ID.into());
        let slug = || Target::Slug {
            key: "k3y".into(),
            slug: "nightly".into(),
        };
        assert_eq!(ok(ID), (id(), PingKind::Success, 0));
        assert_eq!(
            ok(&ID.to_ascii_uppercase()),
            (id(), PingKind::Success, 0),
            "ids are stored lowercase"
        );
        assert_eq!(ok(&format!("{ID}/start")), (id(), PingKind::Start, 0));
        assert_eq!(ok(&format!("{ID}/fail")), (id(), PingKind::Fail, 0));
        assert_eq!(ok(&format!("{ID}/log")), (id(), PingKind::Log, 0));
        assert_eq!(ok(&format!("{ID}/0")), (id(), PingKind::Exit, 0));
        assert_eq!(ok(&format!("{ID}/255")), (id(), PingKind::Exit, 255));
        assert_eq!(ok("k3y/nightly"), (slug(), PingKind::Success, 0));
        assert_eq!(ok("k3y/nightly/start"), (slug(), PingKind::Start, 0));
        assert_eq!(ok("k3y/nightly/3"), (slug(), PingKind::Exit, 3));
    }

    #[test]
    fn bad_exit_statuses_are_named_and_other_shapes_are_not_found() {
        for rest in [format!("{ID}/256"), "k3y/nightly/99999999999".into()] {
            assert_eq!(
                parse(&rest).map(|_| ()),
                Err(PathError::Bad(format!(
                    "exit status: {} is not within 0-255",
                    rest.rsplit('/').next().unwrap_or_default()
                )))
            );
        }
        for rest in [
            "",
            "k3y",
            "k3y/nightly/start/more",
            &format!("{ID}/start/more"),
            &format!("{ID}/restart"),
            &format!("{ID}/-1"),
            "k3y//start",
        ] {
            assert_eq!(parse(rest), Err(PathError::NotFound), "{rest}");
        }
    }

    #[test]
    fn the_query_takes_a_uuid_rid_and_create_1() {
        let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert_eq!(
            parse_query(&pairs(&[
                ("rid", &ID.to_ascii_uppercase()),
                ("create", "1")
            ])),
            Ok(PingQuery {
                rid: ID.into(),
                create: true
            })
        );
        assert_eq!(
            parse_query(&pairs(&[("create", "0"), ("utm", "x")])),
            Ok(PingQuery::default())
        );
        let Err(PathError::Bad(message)) = parse_query(&pairs(&[("rid", "run-1")])) else {
            panic!("a bad rid is refused");
        };
        assert!(
            message.starts_with("rid: \"run-1\" is not a UUID"),
            "{message}"
        );
    }
}
