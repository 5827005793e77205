//! A git remote for a test deployment: orch works only on repositories, so every
//! test that runs an item needs one. `origin_for(dir)` turns `dir` (the folder a
//! config's `path = "."` names) into a clone whose `origin` is a bare repository
//! beside it with one commit on `main`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run git (needed by the tests): {e}"));
    assert!(out.status.success(), "git {args:?} in {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
}

/// Makes `dir/remote.git` (bare, `main` with one commit holding `README.md`) and
/// makes `dir` itself a repository whose `origin` is it. Returns the remote's path.
///
/// # Panics
/// When git is missing or fails: the test cannot mean anything without it.
pub fn origin_for(dir: &Path) -> PathBuf {
    origin_with_ignore(dir, None)
}

/// [`origin_for`] whose first commit also holds a `.gitignore` with `ignore`:
/// suites that test the engine rather than git ignore what their agents write
/// (`"*"`), so items never conflict over a test's marker files.
pub fn origin_with_ignore(dir: &Path, ignore: Option<&str>) -> PathBuf {
    let remote = dir.join("remote.git");
    let seed = dir.join(".seed");
    git(dir, &["init", "--quiet", "--bare", "-b", "main", &remote.display().to_string()]);
    git(dir, &["init", "--quiet", "-b", "main", &seed.display().to_string()]);
    std::fs::write(seed.join("README.md"), "the project orch works on\n").unwrap();
    if let Some(ignore) = ignore {
        std::fs::write(seed.join(".gitignore"), format!("{ignore}\n")).unwrap();
    }
    git(&seed, &["add", "--force", "."]);
    git(&seed, &["-c", "user.name=test", "-c", "user.email=test@localhost", "commit", "--quiet", "-m", "initial"]);
    git(&seed, &["push", "--quiet", &remote.display().to_string(), "main"]);
    std::fs::remove_dir_all(&seed).unwrap();
    git(dir, &["init", "--quiet", "-b", "main"]);
    git(dir, &["remote", "add", "origin", &remote.display().to_string()]);
    remote
}

/// The SHA of `branch` on the bare remote, if it exists.
pub fn remote_sha(remote: &Path, branch: &str) -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--verify", "--quiet", &format!("refs/heads/{branch}")])
        .current_dir(remote)
        .output()
        .ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `git ARGS` in `dir`, its trimmed stdout (panics on failure).
pub fn git_out(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").args(args).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A `pre-receive` hook that refuses every update of `main` but a merge commit
/// whose subject starts with `Merge <KEY>:` — the only way orch may change main.
pub const PRE_RECEIVE_ONLY_ITEM_MERGES: &str = r#"#!/bin/sh
while read old new ref; do
  if [ "$ref" = "refs/heads/main" ]; then
    parents=$(git rev-list --parents -n 1 "$new" | wc -w)
    subject=$(git log -1 --format=%s "$new")
    case "$subject" in Merge\ [A-Z]*-[0-9]*:*) ;; *) echo "main only takes item merges" >&2; exit 1;; esac
    [ "$parents" -ge 3 ] || { echo "main only takes merge commits" >&2; exit 1; }
  fi
done
"#;

/// Installs an executable hook `name` with `body` in the bare repository `remote`.
///
/// # Panics
/// When the hook cannot be written.
pub fn install_hook(remote: &Path, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let hook = remote.join("hooks").join(name);
    std::fs::write(&hook, body).unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
}
