//! Records the git commit the binary was built from, for `--version`.
//!
//! Outside a git checkout (a source tarball, a package build from an
//! exported tree) the commit is `unknown`: the build never fails for it.

use std::process::Command;

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=STTPIPE_GIT_COMMIT={commit}");
    // Rebuild when HEAD moves (a commit, a checkout). Uncommitted changes are
    // not marked: build.rs would have to watch every source file for that.
    // Paths come from git itself, so a worktree works too.
    for name in ["HEAD"] {
        if let Some(path) = git(&["rev-parse", "--git-path", name]) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    if let Some(path) = git(&["rev-parse", "--git-common-dir"]) {
        println!("cargo:rerun-if-changed={path}/refs/heads");
    }
    println!("cargo:rerun-if-changed=build.rs");
}

/// What `git ARGS` prints, trimmed, if git runs and succeeds.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    Some(String::from_utf8(output.stdout).ok()?.trim().to_owned())
}
