//! The SITES arguments of `livehead up`: what each one is, and how they become
//! the agent's `sites.web_root` / `sites.list_file`.

use std::path::{Path, PathBuf};

use livehead_agent::discovery::{ListEntry, parse_list};

use crate::UpError;

/// Extensions of a word that is meant as a file name, not a host name: a
/// missing `sites.txt` is a typo to report, not a site to probe.
const FILE_LIKE_EXTENSIONS: &[&str] = &[
    "txt", "list", "lst", "csv", "conf", "cfg", "toml", "yaml", "yml", "json",
];

/// One SITES argument, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteArg {
    /// An existing directory: every subdirectory is a site.
    WebRoot(PathBuf),
    /// An existing file: one host name or URL per line.
    ListFile(PathBuf),
    /// An http(s) URL, probed as given, or a host name, probed at the target
    /// (or at `https://<name>/`). Kept as one list-file line.
    Direct(String),
}

/// Classifies one argument. Existing paths win over names, so a directory
/// called `example.com` in the working directory is a web root.
pub fn classify(arg: &str) -> Result<SiteArg, UpError> {
    let path = Path::new(arg);
    if path.is_dir() {
        return Ok(SiteArg::WebRoot(path.to_owned()));
    }
    if path.exists() {
        return Ok(SiteArg::ListFile(path.to_owned()));
    }
    let bad = |reason: &str| UpError::BadSite {
        arg: arg.to_owned(),
        reason: reason.to_owned(),
    };
    let line = arg.trim();
    // A list-file line is what the agent will read, so the agent's own parser
    // decides what is a valid name or URL. `#` would start a comment there.
    if line.contains('#') {
        return Err(bad(
            "`#` is not allowed (it starts a comment in a site list)",
        ));
    }
    let parsed = parse_list(line);
    match parsed.as_slice() {
        [(_, Ok(ListEntry::Url { .. }))] => Ok(SiteArg::Direct(line.to_owned())),
        [(_, Ok(ListEntry::Name(name)))] => {
            let looks_like_file = !line.contains("://")
                && name
                    .rsplit_once('.')
                    .is_some_and(|(_, ext)| FILE_LIKE_EXTENSIONS.contains(&ext));
            if looks_like_file {
                Err(bad(&format!(
                    "no such file (to probe a host of that name, give it as https://{name}/)"
                )))
            } else {
                Ok(SiteArg::Direct(line.to_owned()))
            }
        }
        _ if line.contains('/') && !line.contains("://") => Err(bad("no such file or directory")),
        _ => Err(bad(
            "neither an existing directory or file, nor an http(s) URL or host name",
        )),
    }
}

/// Where the agent finds its sites.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SitesPlan {
    pub web_root: Option<PathBuf>,
    pub list_file: Option<PathBuf>,
    /// Set when `list_file` is one `up` writes at start from several arguments.
    pub merged: Option<Merged>,
}

/// What goes into the list file `up` writes: the URLs and names given, then
/// the lines of the list files given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    pub path: PathBuf,
    pub direct: Vec<String>,
    pub list_files: Vec<PathBuf>,
}

/// Decides how the arguments reach the agent. A single list file given alone
/// is used in place, so it stays live (re-read every round); any other mix of
/// list files and names is merged into `merged_path` once, at start.
pub fn plan(args: &[SiteArg], merged_path: &Path) -> Result<SitesPlan, UpError> {
    let mut web_root: Option<PathBuf> = None;
    let mut list_files = Vec::new();
    let mut direct = Vec::new();
    for arg in args {
        match arg {
            SiteArg::WebRoot(dir) => {
                if let Some(first) = &web_root {
                    return Err(UpError::TwoWebRoots {
                        first: first.clone(),
                        second: dir.clone(),
                    });
                }
                web_root = Some(dir.clone());
            }
            SiteArg::ListFile(file) => list_files.push(file.clone()),
            SiteArg::Direct(line) => direct.push(line.clone()),
        }
    }
    if web_root.is_none() && list_files.is_empty() && direct.is_empty() {
        return Err(UpError::NoSites);
    }
    let (list_file, merged) = match (list_files.as_slice(), direct.is_empty()) {
        ([], true) => (None, None),
        ([only], true) => (Some(only.clone()), None),
        _ => (
            Some(merged_path.to_owned()),
            Some(Merged {
                path: merged_path.to_owned(),
                direct,
                list_files,
            }),
        ),
    };
    Ok(SitesPlan {
        web_root,
        list_file,
        merged,
    })
}

impl Merged {
    /// The merged list's text; list files are read now.
    pub fn render(&self) -> Result<String, UpError> {
        let mut text = String::from(
            "# Written by `livehead up` at start from its SITES arguments; rewritten at\n\
             # every start, so edit the original files instead.\n",
        );
        for line in &self.direct {
            text.push_str(line);
            text.push('\n');
        }
        for file in &self.list_files {
            let body = std::fs::read_to_string(file).map_err(|source| UpError::ReadSites {
                path: file.clone(),
                source,
            })?;
            text.push_str(&format!("# from {}\n", file.display()));
            text.push_str(&body);
            if !body.ends_with('\n') {
                text.push('\n');
            }
        }
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_urls_and_names_are_told_apart() {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path().join("www");
        std::fs::create_dir(&root).expect("mkdir");
        let list = dir.path().join("sites.txt");
        std::fs::write(&list, "a.example\n").expect("write");
        let s = |p: &Path| p.to_str().expect("utf8").to_owned();

        assert_eq!(classify(&s(&root)).expect("dir"), SiteArg::WebRoot(root));
        assert_eq!(classify(&s(&list)).expect("file"), SiteArg::ListFile(list));
        for direct in [
            "example.com",
            "https://shop.example.net/health",
            "http://127.0.0.1:8080/",
        ] {
            assert_eq!(
                classify(direct).expect(direct),
                SiteArg::Direct(direct.into())
            );
        }
    }

    #[test]
    fn typos_and_junk_are_refused_with_the_argument() {
        for (arg, says) in [
            ("sites.txt", "no such file"),
            ("./missing/www", "no such file or directory"),
            ("ftp://example.com/", "neither"),
            ("not a site", "neither"),
            ("example.com#x", "`#`"),
        ] {
            let err = classify(arg).expect_err(arg).to_string();
            assert!(err.contains(arg) && err.contains(says), "{arg}: {err}");
        }
    }

    fn merged_path() -> PathBuf {
        PathBuf::from("/state/sites.txt")
    }

    #[test]
    fn a_lone_list_file_is_used_in_place() {
        let args = [
            SiteArg::WebRoot("/www".into()),
            SiteArg::ListFile("/etc/sites".into()),
        ];
        let plan = plan(&args, &merged_path()).expect("plan");
        assert_eq!(plan.web_root, Some("/www".into()));
        assert_eq!(plan.list_file, Some("/etc/sites".into()));
        assert_eq!(plan.merged, None);
    }

    #[test]
    fn names_and_several_lists_are_merged_into_the_state_file() {
        let args = [
            SiteArg::Direct("a.example".into()),
            SiteArg::ListFile("/l1".into()),
            SiteArg::ListFile("/l2".into()),
        ];
        let plan = plan(&args, &merged_path()).expect("plan");
        assert_eq!(plan.web_root, None);
        assert_eq!(plan.list_file, Some(merged_path()));
        let merged = plan.merged.expect("merged");
        assert_eq!(merged.direct, ["a.example"]);
        assert_eq!(merged.list_files, [PathBuf::from("/l1"), "/l2".into()]);
    }

    #[test]
    fn one_web_root_only() {
        let args = [SiteArg::WebRoot("/a".into()), SiteArg::WebRoot("/b".into())];
        let err = plan(&args, &merged_path())
            .expect_err("two roots")
            .to_string();
        assert!(err.contains("/a") && err.contains("/b"), "{err}");
        assert!(matches!(plan(&[], &merged_path()), Err(UpError::NoSites)));
    }

    #[test]
    fn the_merged_list_holds_names_then_files() {
        let dir = tempfile::tempdir().expect("tmp");
        let list = dir.path().join("l");
        std::fs::write(&list, "b.example\n# c\nhttps://d.example/").expect("write");
        let merged = Merged {
            path: dir.path().join("out"),
            direct: vec!["a.example".into()],
            list_files: vec![list],
        };
        let text = merged.render().expect("render");
        let entries: Vec<_> = parse_list(&text)
            .into_iter()
            .map(|(_, e)| e.expect("valid line"))
            .collect();
        assert_eq!(entries.len(), 3, "{text}");
        assert_eq!(entries[0], ListEntry::Name("a.example".into()));
        assert_eq!(entries[1], ListEntry::Name("b.example".into()));
        assert!(matches!(&entries[2], ListEntry::Url { name, .. } if name == "d.example"));
        let missing = Merged {
            list_files: vec![dir.path().join("gone")],
            ..merged
        };
        assert!(matches!(missing.render(), Err(UpError::ReadSites { .. })));
    }
}
