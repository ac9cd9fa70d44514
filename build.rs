//! Records the git commit the binary is built from, for `sttpipe --version`.
//!
//! Asks git, the one tool a checkout has anyway; outside a checkout (a
//! source tarball, `cargo install` from a copy) or without git, the commit
//! is "unknown". STTPIPE_GIT_COMMIT, when set, wins: for builds from an
//! exported tree that know their commit.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=STTPIPE_GIT_COMMIT");
    let commit = std::env::var("STTPIPE_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo::rustc-env=STTPIPE_GIT_COMMIT={}", commit.trim());
}

/// The commit of HEAD, and (as rerun-if-changed lines) the files that
/// change when HEAD moves; `None` outside a checkout.
fn git_commit() -> Option<String> {
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    // HEAD itself (a branch switch), the branch's ref (a commit), and
    // packed-refs (where a ref may live instead). In a worktree HEAD is in
    // the worktree's git dir, the refs in the common one.
    // Only files that exist: cargo takes a missing one as always changed,
    // which would rebuild the crate on every build.
    let mut watched = Vec::new();
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        watched.push(PathBuf::from(git_dir).join("HEAD"));
    }
    if let Some(common) = git(&["rev-parse", "--path-format=absolute", "--git-common-dir"]) {
        let common = PathBuf::from(common);
        watched.push(common.join("packed-refs"));
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watched.push(common.join(branch));
        }
    }
    for path in watched.iter().filter(|path| path.exists()) {
        println!("cargo::rerun-if-changed={}", path.display());
    }
    Some(commit)
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!text.is_empty()).then_some(text)
}
