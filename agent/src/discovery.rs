//! Which sites this node serves: directories under a web root and/or the lines
//! of a list file, read again at every round so new sites need no restart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use livehead_common::host::check_host_name;
use regex::Regex;

use crate::probe::Target;

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("cannot read web root {path}: {source}")]
    WebRoot {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read site list {path}: {source}")]
    ListFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "invalid probe target {0:?}: expected HOST:PORT, http://HOST:PORT or https://HOST:PORT"
    )]
    Target(String),
    #[error("invalid ignore pattern: {0}")]
    Ignore(#[from] regex::Error),
}

/// One site to probe and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    pub name: String,
    pub target: Target,
}

/// How names without a URL are probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DefaultTarget {
    /// The node's address, site in the Host header.
    Fixed { host: String, port: u16, tls: bool },
    /// `https://<name>/`.
    Direct,
}

impl DefaultTarget {
    /// Parses `HOST:PORT`, `http://HOST:PORT` or `https://HOST:PORT`
    /// (port defaults to 8080 for http, as the old script, and 443 for https).
    pub fn parse(spec: Option<&str>) -> Result<Self, DiscoveryError> {
        let Some(spec) = spec else {
            return Ok(Self::Direct);
        };
        let bad = || DiscoveryError::Target(spec.to_owned());
        let (tls, rest) = match spec.split_once("://") {
            Some(("http", rest)) => (false, rest),
            Some(("https", rest)) => (true, rest),
            Some(_) => return Err(bad()),
            None => (false, spec),
        };
        let rest = rest.trim_end_matches('/');
        let uri: http::uri::Authority = rest.parse().map_err(|_| bad())?;
        let host = uri.host().trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad());
        }
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 8080 });
        Ok(Self::Fixed {
            host: host.to_owned(),
            port,
            tls,
        })
    }

    fn target_for(&self, name: &str) -> Option<Target> {
        match self {
            Self::Fixed { host, port, tls } => Some(Target::Fixed {
                host: host.clone(),
                port: *port,
                tls: *tls,
            }),
            Self::Direct => format!("https://{name}/").parse().ok().map(Target::Url),
        }
    }
}

/// Discovery settings checked once at start.
#[derive(Debug, Clone)]
pub struct Discovery {
    pub web_root: Option<PathBuf>,
    pub list_file: Option<PathBuf>,
    pub ignore: Regex,
    pub default_target: DefaultTarget,
}

/// The sites of one round, and the sources that could not be read (the round
/// goes on with the others).
#[derive(Debug, Default)]
pub struct Discovered {
    pub sites: Vec<Site>,
    pub errors: Vec<DiscoveryError>,
    /// List-file lines that are neither a host name nor a URL: (line number, text).
    pub bad_lines: Vec<(usize, String)>,
}

impl Discovery {
    /// Reads every source; sites are unique by name and sorted by name.
    pub fn discover(&self) -> Discovered {
        let mut out = Discovered::default();
        let mut by_name = BTreeMap::new();
        if let Some(root) = &self.web_root {
            match web_root_names(root, &self.ignore) {
                Ok(names) => {
                    for name in names {
                        if let Some(target) = self.default_target.target_for(&name) {
                            by_name.entry(name).or_insert(target);
                        }
                    }
                }
                Err(e) => out.errors.push(e),
            }
        }
        if let Some(path) = &self.list_file {
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    for (line_no, entry) in parse_list(&text) {
                        match entry {
                            Ok(ListEntry::Name(name)) => {
                                if let Some(target) = self.default_target.target_for(&name) {
                                    by_name.entry(name).or_insert(target);
                                }
                            }
                            Ok(ListEntry::Url { name, uri }) => {
                                by_name.entry(name).or_insert(Target::Url(uri));
                            }
                            Err(text) => out.bad_lines.push((line_no, text)),
                        }
                    }
                }
                Err(source) => out.errors.push(DiscoveryError::ListFile {
                    path: path.clone(),
                    source,
                }),
            }
        }
        out.sites = by_name
            .into_iter()
            .map(|(name, target)| Site { name, target })
            .collect();
        out
    }
}

fn web_root_names(root: &Path, ignore: &Regex) -> Result<Vec<String>, DiscoveryError> {
    let err = |source| DiscoveryError::WebRoot {
        path: root.to_owned(),
        source,
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(root).map_err(err)? {
        let entry = entry.map_err(err)?;
        // Follows symlinks, as the script's `[[ -d ]]` does.
        let is_dir = std::fs::metadata(entry.path()).is_ok_and(|m| m.is_dir());
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if is_dir && !ignore.is_match(&name) && !name.starts_with('.') {
            names.push(name);
        }
    }
    Ok(names)
}

/// One useful line of a site list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListEntry {
    Name(String),
    Url { name: String, uri: http::Uri },
}

/// Parses a site list: blank lines and `#` comments are skipped; each other
/// line is a host name or an http(s) URL. Bad lines come back as `Err(text)`
/// with their 1-based line number.
pub fn parse_list(text: &str) -> Vec<(usize, Result<ListEntry, String>)> {
    text.lines()
        .enumerate()
        .filter_map(|(i, raw)| {
            let line = raw.split('#').next().unwrap_or("").trim();
            (!line.is_empty()).then(|| (i + 1, parse_entry(line)))
        })
        .collect()
}

fn parse_entry(line: &str) -> Result<ListEntry, String> {
    if line.contains("://") {
        let uri: http::Uri = line.parse().map_err(|_| line.to_owned())?;
        let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
        let host = uri.host().map(str::to_ascii_lowercase);
        return match (scheme_ok, host) {
            (true, Some(name)) if !name.is_empty() => Ok(ListEntry::Url { name, uri }),
            _ => Err(line.to_owned()),
        };
    }
    if check_host_name(line).is_ok() {
        Ok(ListEntry::Name(line.to_ascii_lowercase()))
    } else {
        Err(line.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discovery(root: Option<PathBuf>, list: Option<PathBuf>, target: &str) -> Discovery {
        Discovery {
            web_root: root,
            list_file: list,
            ignore: Regex::new(crate::config::DEFAULT_IGNORE).expect("regex"),
            default_target: DefaultTarget::parse(Some(target)).expect("target"),
        }
    }

    #[test]
    fn web_root_directories_are_sites_except_ignored_ones() {
        let dir = tempfile::tempdir().expect("tmp");
        for d in [
            "b.example",
            "a.example",
            "backups",
            "lost+found",
            "update",
            "new",
            "readyz",
        ] {
            std::fs::create_dir(dir.path().join(d)).expect("mkdir");
        }
        std::fs::write(dir.path().join("file.example"), "not a dir").expect("file");
        let found = discovery(Some(dir.path().into()), None, "10.0.0.7:8080").discover();
        let names: Vec<_> = found.sites.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a.example", "b.example"]);
        assert_eq!(
            found.sites[0].target,
            Target::Fixed {
                host: "10.0.0.7".into(),
                port: 8080,
                tls: false
            }
        );
        // A new directory shows up on the next call, without a restart.
        std::fs::create_dir(dir.path().join("c.example")).expect("mkdir");
        let again = discovery(Some(dir.path().into()), None, "10.0.0.7:8080").discover();
        assert_eq!(again.sites.len(), 3);
    }

    #[test]
    fn list_file_takes_names_urls_and_comments() {
        let parsed = parse_list(
            "# sites\nExample.com\n\n  https://shop.example.net/health # direct\nnot a site\nftp://x.y/\n",
        );
        assert_eq!(parsed.len(), 4);
        assert_eq!(parsed[0], (2, Ok(ListEntry::Name("example.com".into()))));
        match &parsed[1] {
            (4, Ok(ListEntry::Url { name, uri })) => {
                assert_eq!(name, "shop.example.net");
                assert_eq!(uri.path(), "/health");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(parsed[2], (5, Err("not a site".into())));
        assert_eq!(parsed[3], (6, Err("ftp://x.y/".into())));
    }

    #[test]
    fn missing_sources_are_reported_not_fatal() {
        let dir = tempfile::tempdir().expect("tmp");
        let list = dir.path().join("sites.txt");
        std::fs::write(&list, "one.example\n").expect("write");
        let found = discovery(
            Some(dir.path().join("nope")),
            Some(list),
            "https://10.1.2.3",
        )
        .discover();
        assert_eq!(found.sites.len(), 1);
        assert_eq!(found.errors.len(), 1);
        assert!(found.errors[0].to_string().contains("nope"));
        assert_eq!(
            found.sites[0].target,
            Target::Fixed {
                host: "10.1.2.3".into(),
                port: 443,
                tls: true
            }
        );
    }

    #[test]
    fn targets_parse_or_name_the_problem() {
        assert_eq!(
            DefaultTarget::parse(None).expect("direct"),
            DefaultTarget::Direct
        );
        assert!(matches!(
            DefaultTarget::parse(Some("http://[::1]:81")).expect("v6"),
            DefaultTarget::Fixed { ref host, port: 81, tls: false } if host == "::1"
        ));
        let err = DefaultTarget::parse(Some("ftp://x:1")).expect_err("scheme");
        assert!(err.to_string().contains("ftp://x:1"));
    }
}
