//! The embedded forge (`forge = "local"`, the default): pull requests kept in
//! orch's own store (the `prs` table), so every node sees the same ones, and the
//! merge done by orch itself on the remote through `orch-vcs`.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use orch_core::ItemKey;
use orch_store::{NewPr, PrCheck, PrUpdate, PullRequest, Store};
use orch_vcs::{Author, CheckStatus, Forge, ForgeError, Merge, PrRef, PrSpec, Repo};

/// The local forge of one repository.
pub(crate) struct LocalForge {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Fn() -> orch_core::Timestamp + Send + Sync>,
    pub(crate) repo: Repo,
    pub(crate) author: Author,
    /// Where merges are made: a temporary worktree per item under this folder.
    pub(crate) scratch: PathBuf,
}

fn key(item: &str) -> Result<ItemKey, ForgeError> {
    item.parse().map_err(|e| ForgeError::Other(format!("bad item key {item:?}: {e}")))
}

fn store_err(e: orch_store::Error) -> ForgeError {
    ForgeError::Other(e.to_string())
}

fn to_ref(pr: &PullRequest) -> PrRef {
    PrRef {
        number: pr.number,
        url: pr.url.clone(),
        state: pr.state.clone(),
        branch: pr.branch.clone(),
        head_sha: pr.head_sha.clone(),
        merge_sha: pr.merge_sha.clone(),
    }
}

impl LocalForge {
    fn now(&self) -> orch_core::Timestamp {
        (self.clock)()
    }

    async fn update(&self, item: &str, update: PrUpdate) -> Result<PullRequest, ForgeError> {
        match self.store.update_pr(&key(item)?, update, self.now()).await {
            Ok(pr) => Ok(pr),
            Err(orch_store::Error::NotFound { .. }) => Err(ForgeError::NoPullRequest(item.to_owned())),
            Err(e) => Err(store_err(e)),
        }
    }
}

#[async_trait]
impl Forge for LocalForge {
    async fn open_or_update(&self, spec: &PrSpec) -> Result<(PrRef, bool), ForgeError> {
        let new = NewPr {
            item: key(&spec.item)?,
            repo: spec.repo.clone(),
            title: spec.title.clone(),
            body: spec.body.clone(),
            branch: spec.branch.clone(),
            head_sha: spec.head_sha.clone(),
            url: format!("local://{}/pulls/{}", spec.repo, spec.item),
        };
        let (pr, created) = self.store.open_pr(new, self.now()).await.map_err(store_err)?;
        if created || pr.state != PullRequest::OPEN {
            return Ok((to_ref(&pr), created));
        }
        let update =
            PrUpdate { head_sha: Some(spec.head_sha.clone()), body: Some(spec.body.clone()), ..PrUpdate::default() };
        Ok((to_ref(&self.update(&spec.item, update).await?), false))
    }

    async fn set_status(&self, item: &str, check: &CheckStatus) -> Result<(), ForgeError> {
        let c = PrCheck { sha: check.sha.clone(), passed: check.passed, reason: check.reason.clone(), at: self.now() };
        self.update(item, PrUpdate { check: Some((check.gate.clone(), c)), ..PrUpdate::default() }).await.map(|_| ())
    }

    async fn merge(&self, item: &str, head_sha: &str, message: &str) -> Result<Merge, ForgeError> {
        let merged = self.repo.merge_into_main(head_sha, message, &self.author, &self.scratch.join(item)).await?;
        let merge_sha = match &merged {
            Merge::Merged { sha } => sha.clone(),
            Merge::AlreadyMerged { main } => main.clone(),
            Merge::Conflict { .. } => return Ok(merged),
        };
        let update =
            PrUpdate { state: Some(PullRequest::MERGED.to_owned()), merge_sha: Some(merge_sha), ..PrUpdate::default() };
        match self.update(item, update).await {
            // An item that never pushed has no pull request: nothing to mark.
            Ok(_) | Err(ForgeError::NoPullRequest(_)) => Ok(merged),
            Err(e) => Err(e),
        }
    }

    async fn close(&self, item: &str) -> Result<(), ForgeError> {
        let Some(pr) = self.store.get_pr(&key(item)?).await.map_err(store_err)? else { return Ok(()) };
        if pr.state != PullRequest::OPEN {
            return Ok(());
        }
        self.update(item, PrUpdate { state: Some(PullRequest::CLOSED.to_owned()), ..PrUpdate::default() })
            .await
            .map(|_| ())
    }

    async fn find_by_branch(&self, branch: &str) -> Result<Option<PrRef>, ForgeError> {
        Ok(self.store.find_pr_by_branch(branch).await.map_err(store_err)?.as_ref().map(to_ref))
    }
}
