//! Records the git commit the binary is built from, for `livehead --version`.
//! Outside a git checkout (a source tarball, a container build without
//! `.git`), or without git, the commit is `unknown`; the build never fails
//! for it. `LIVEHEAD_GIT_COMMIT` in the build's environment overrides it
//! (a packager that knows the commit but has no checkout).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=LIVEHEAD_GIT_COMMIT");
    let commit = std::env::var("LIVEHEAD_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=LIVEHEAD_GIT_COMMIT={}", commit.trim());
    for path in git_paths() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn git_commit() -> Option<String> {
    git(&["rev-parse", "--short=12", "HEAD"])
}

/// The files whose change means another commit: HEAD, the branch it points
/// to, and packed refs (where a branch may live instead). In a worktree
/// these sit in different directories, which `--git-path` resolves.
fn git_paths() -> Vec<PathBuf> {
    let mut refs = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        refs.push(branch);
    }
    refs.iter()
        .filter_map(|r| git(&["rev-parse", "--git-path", r]))
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .collect()
}
