//! Where pull requests live. The engine speaks to a forge only through this
//! trait, so adapters for hosted forges (Gitea/Forgejo, GitHub) fit beside the
//! embedded local one without touching the engine. Every operation is keyed by
//! the item and idempotent: opening an open PR updates it, merging a merged PR
//! succeeds, closing a closed one does nothing — a retried side effect is a no-op.

use async_trait::async_trait;

use crate::Merge;

/// What a pull request should say: opened at an item's first push and updated
/// at every later one.
#[derive(Clone, Debug)]
pub struct PrSpec {
    /// The item's key (one pull request per item).
    pub item: String,
    pub repo: String,
    pub title: String,
    pub body: String,
    pub branch: String,
    pub head_sha: String,
}

/// A pull request as the forge has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrRef {
    pub number: i64,
    pub url: String,
    /// `open`, `merged` or `closed`.
    pub state: String,
    pub branch: String,
    pub head_sha: Option<String>,
    pub merge_sha: Option<String>,
}

/// One gate's result on one commit, shown on the pull request.
#[derive(Clone, Debug)]
pub struct CheckStatus {
    pub gate: String,
    pub sha: String,
    pub passed: bool,
    pub reason: Option<String>,
}

/// Why a forge operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    #[error("item {0} has no pull request")]
    NoPullRequest(String),
    #[error("forge: {0}")]
    Git(#[from] crate::Error),
    #[error("forge: {0}")]
    Other(String),
}

/// A forge: pull requests, their check statuses, and the merge.
#[async_trait]
pub trait Forge: Send + Sync {
    /// Opens the item's pull request, or moves its head and body if it is open.
    /// Returns it and whether this call opened it.
    async fn open_or_update(&self, spec: &PrSpec) -> Result<(PrRef, bool), ForgeError>;

    /// Shows one gate's result for one commit on the item's pull request.
    async fn set_status(&self, item: &str, check: &CheckStatus) -> Result<(), ForgeError>;

    /// Merges the item's pull request at `head_sha` into the main branch with
    /// `message`. A pull request already merged is success; a conflict is an
    /// outcome (`Merge::Conflict`), not an error.
    async fn merge(&self, item: &str, head_sha: &str, message: &str) -> Result<Merge, ForgeError>;

    /// Closes the item's pull request without merging (the item was cancelled).
    async fn close(&self, item: &str) -> Result<(), ForgeError>;

    /// The pull request whose head is `branch`, if any.
    async fn find_by_branch(&self, branch: &str) -> Result<Option<PrRef>, ForgeError>;
}
