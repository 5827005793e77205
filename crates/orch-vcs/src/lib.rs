//! orch's git layer (DESIGN §4): a bare mirror per repository under the node's
//! data directory, a worktree and feature branch per item, commits with the
//! trailers that let a retry find its own work, pushes fenced by git's
//! `--force-with-lease`, and merges into main that never force.
//!
//! Architecture invariants:
//! - git is driven through its CLI (`git.rs`), every call bounded by a timeout.
//! - Main changes only through `Repo::merge_into_main` (a merge commit, pushed as
//!   a fast-forward of the remote's main; never forced).
//! - An item branch moves on the remote only by a push whose lease names the SHA
//!   the caller holds: a stale owner's push is refused by git itself.

mod branch;
mod forge;
pub mod git;
mod repo;

pub use branch::{SLUG_MAX, item_branch, slug};
pub use forge::{CheckStatus, Forge, ForgeError, PrRef, PrSpec};
pub use git::Git;
pub use repo::{Author, Preview, Repo, RepoSpec, Status, Worktree, resolve_remote};

/// What merging an item into main did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Merge {
    /// A merge commit was pushed to main.
    Merged { sha: String },
    /// The item's commit was already in main: merging a merged item is success.
    AlreadyMerged { main: String },
    /// The item's branch conflicts with main in these paths.
    Conflict { paths: Vec<String> },
}

/// Git failures, each naming the command or the repository.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot run {command}: {source}")]
    Spawn { command: String, source: std::io::Error },
    #[error("{command} did not finish within {}s", after.as_secs())]
    Timeout { command: String, after: std::time::Duration },
    #[error("{command} failed (exit {code}): {stderr}")]
    Failed { command: String, code: i32, stderr: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("repo {repo}: {path} is not a git repository ({why})")]
    NotARepo { repo: String, path: String, why: String },
    #[error("repo {repo}: the clone at {path} has no remote named origin (set `url` or add one)")]
    NoRemote { repo: String, path: String },
    #[error("repo {repo}: the remote has no branch {branch}")]
    NoMainBranch { repo: String, branch: String },
    #[error("repo {repo}: the remote already has a branch {branch} that orch did not create; orch never overwrites it")]
    ForeignBranch { repo: String, branch: String },
    #[error("branch {branch}: commit {sha} recorded in the store is not on the remote")]
    UnknownCommit { branch: String, sha: String },
    #[error("push of {branch} refused: the remote branch is no longer at {expected} (another owner moved it)")]
    PushRejected { branch: String, expected: String },
    #[error("repo {repo}: main kept moving while merging; try again")]
    MainKeepsMoving { repo: String },
    #[error("{what}")]
    Contained { what: String },
}
