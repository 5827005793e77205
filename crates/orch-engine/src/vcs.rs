//! The item's git work as the engine does it (DESIGN §2.3, §6): its worktree and
//! branch, the auto-commit after each run, the fenced push that makes the commit
//! the store's truth, the pull request on the forge, and the merge into main when
//! the last stage passes — the only way main ever changes.
//!
//! Every side effect here is fenced twice: git's own compare-and-swap
//! (`--force-with-lease=<branch>:<SHA the store holds>`) refuses a stale owner's
//! push, and `record_push` refuses a stale epoch's record. A retry after a crash
//! between push and record finds its commit by the `Orch-Job` trailer and records
//! it instead of committing again. Any node can continue an item: the worktree is
//! rebuilt from the SHA in the store, never assumed to be local.

use std::collections::HashMap;
use std::sync::Arc;

use orch_core::EventKind;
use orch_core::config::ForgeKind;
use orch_store::{Item, Job, NewEvent};
use orch_vcs::{Author, Forge, Git, Merge, PrSpec, Repo, RepoSpec, Worktree};
use serde_json::json;
use tracing::{info, warn};

use crate::Error;
use crate::ctx::Ctx;
use crate::launch::INFRA;
use crate::local_forge::LocalForge;

/// A repository the node has a mirror of, and the forge its pull requests live on.
pub(crate) struct RepoHandle {
    pub(crate) repo: Repo,
    pub(crate) author: Author,
    pub(crate) forge: Arc<dyn Forge>,
}

/// The node's repositories, made ready (mirror cloned and fetched) on first use.
/// Each repo has a cell of its own, so a slow or unreachable remote delays only
/// its own items; a failure is remembered for [`RETRY_AFTER`] so every job of a
/// broken repo does not wait on the network again.
#[derive(Default)]
pub(crate) struct Repos {
    cells: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Cell>>>>,
}

/// How long a repo that could not be made ready is taken as still broken.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Default)]
enum Cell {
    #[default]
    Empty,
    Ready(Arc<RepoHandle>),
    Failed {
        why: String,
        at: tokio::time::Instant,
    },
}

/// An item's worktree, ready for a run.
#[derive(Clone)]
pub(crate) struct Tree {
    pub(crate) handle: Arc<RepoHandle>,
    pub(crate) wt: Worktree,
    /// The commit the run starts at.
    pub(crate) base: String,
    /// The worktree repository's local main before the run (containment check).
    main_before: Option<String>,
    /// The branch's SHA as the store records it (after any adoption): the lease
    /// of the next push.
    pub(crate) recorded: Option<String>,
}

/// Why the git work after a run did not complete.
pub(crate) enum AfterRun {
    /// The agent left its branch, rewrote history or touched main; undone.
    Contained(String),
    /// Another owner moved the branch or the job (fenced by git or the store).
    Fenced,
    /// git or the remote failed (reason prefixed `infrastructure: `).
    Infra(String),
}

impl Repos {
    /// The handle of `repo_name`, making its mirror on first use.
    ///
    /// # Errors
    /// The reason, naming the repo: not a repository, no remote, unreachable, no main.
    pub(crate) async fn get(&self, ctx: &Ctx, repo_name: &str) -> Result<Arc<RepoHandle>, String> {
        let cell = {
            let mut cells = self.cells.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(cells.entry(repo_name.to_owned()).or_default())
        };
        let mut cell = cell.lock().await;
        match &*cell {
            Cell::Ready(h) => return Ok(Arc::clone(h)),
            Cell::Failed { why, at } if at.elapsed() < RETRY_AFTER => return Err(why.clone()),
            _ => {}
        }
        match make_ready(ctx, repo_name).await {
            Ok(h) => {
                *cell = Cell::Ready(Arc::clone(&h));
                Ok(h)
            }
            Err(why) => {
                *cell = Cell::Failed { why: why.clone(), at: tokio::time::Instant::now() };
                Err(why)
            }
        }
    }
}

/// Resolves a repo's remote, makes its mirror and fetches it.
async fn make_ready(ctx: &Ctx, repo_name: &str) -> Result<Arc<RepoHandle>, String> {
    let conf = ctx.config.repo(repo_name).ok_or_else(|| format!("repo {repo_name} is not in the config"))?;
    let git = Git::default();
    let path = (!conf.path.as_os_str().is_empty()).then(|| ctx.config.resolve_path(&conf.path));
    let remote = orch_vcs::resolve_remote(&git, repo_name, path.as_deref(), conf.url.as_deref())
        .await
        .map_err(|e| e.to_string())?;
    let spec = RepoSpec { name: repo_name.to_owned(), remote, main_branch: conf.main_branch.clone() };
    let repo = Repo::new(git, spec, ctx.layout.mirror(repo_name));
    repo.ensure().await.map_err(|e| e.to_string())?;
    let author = Author { name: conf.author_name.clone(), email: conf.author_email.clone() };
    let forge: Arc<dyn Forge> = match conf.forge {
        ForgeKind::Local => Arc::new(LocalForge {
            store: Arc::clone(&ctx.store),
            clock: ctx.store_clock(),
            repo: repo.clone(),
            author: author.clone(),
            scratch: ctx.layout.root().join("merge"),
        }),
        other => {
            return Err(format!(
                "repo {repo_name}: forge {other:?} has no adapter in this orch yet; use forge = \"local\""
            ));
        }
    };
    Ok(Arc::new(RepoHandle { repo, author, forge }))
}

/// The branch an item works on: the one the store records, else its derived name.
pub(crate) fn branch_of(item: &Item) -> String {
    item.branch.clone().unwrap_or_else(|| orch_vcs::item_branch(&item.key, item.kind, &item.title))
}

/// Why the worktree could not be prepared.
pub(crate) enum PrepareError {
    /// git or the remote failed (reason prefixed `infrastructure: `).
    Infra(String),
    /// This owner's epoch is stale.
    Fenced,
}

/// Builds (or reuses) the item's worktree at the SHA the store records, on
/// whichever node this is. Commits a crashed owner pushed but never recorded (it
/// died between push and record) are adopted — recorded under this job's epoch —
/// rather than committed again or overwritten; anything on the branch that is not
/// orch's work on this item is refused, never overwritten.
///
/// `settled` is the worktree a stage that just ended on this node left (see
/// [`after_run`]) when this job was claimed by that stage's transition: taken as
/// is, with no fetch and no git call, when the store still records the commit it
/// is at and git's own files say it is still as that run left it
/// (`Repo::worktree_is_at`). Nothing ran in it since the run's checks, and the
/// store's record is what was pushed. A late push to the branch by anyone else
/// meanwhile is caught at this run's own push (git refuses it: the remote is no
/// longer at the recorded SHA), and the retry's full preparation adopts or
/// refuses it.
pub(crate) async fn prepare(ctx: &Ctx, job: &Job, item: &Item, settled: Option<Tree>) -> Result<Tree, PrepareError> {
    if let Some(tree) =
        settled.filter(|t| t.still_fits(item) && t.handle.repo.worktree_is_at(&t.wt.path, &t.wt.branch, &t.base))
    {
        return Ok(tree);
    }
    let fail = |e: String| PrepareError::Infra(format!("{INFRA}{e}"));
    let handle = ctx.repos.get(ctx, &item.repo).await.map_err(fail)?;
    let path = ctx.layout.workdir(&item.key);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| fail(format!("cannot make {}: {e}", parent.display())))?;
    }
    let repo = &handle.repo;
    let branch = branch_of(item);
    repo.fetch().await.map_err(|e| fail(e.to_string()))?;
    let tip = repo.remote_sha(&branch).await.map_err(|e| fail(e.to_string()))?;
    let mut recorded = item.head_sha.clone();
    if let Some(tip) = tip.filter(|t| recorded.as_deref() != Some(t.as_str())) {
        let descends = match &recorded {
            Some(h) => repo.descends(h, &tip).await.map_err(|e| fail(e.to_string()))?,
            None => true,
        };
        let ours = descends
            && repo
                .all_orch_work(recorded.as_deref(), &tip, &item.key.to_string())
                .await
                .map_err(|e| fail(e.to_string()))?;
        if !ours {
            return Err(fail(format!(
                "the remote branch {branch} is at {}, which orch did not push for {}; orch never overwrites it",
                short(&tip),
                item.key
            )));
        }
        info!(item = %item.key, job = %job.id, sha = %tip, "adopting commits pushed by an owner that died before recording them");
        let mut e = NewEvent::new(item.key.clone(), EventKind::VcsPushed);
        e.job = Some(job.id);
        e.epoch = Some(job.epoch);
        e.data = json!({ "sha": tip, "branch": branch, "previous": recorded, "adopted": true });
        match ctx.within_lease(ctx.store.record_push(job.id, job.epoch, &branch, &tip, &[e], ctx.now())).await {
            Ok(()) => recorded = Some(tip),
            Err(Error::Store(orch_store::Error::FencedOut { .. })) => return Err(PrepareError::Fenced),
            Err(e) => return Err(fail(format!("cannot record the adopted push: {e}"))),
        }
    }
    let wt = repo.worktree(&path, &branch, recorded.as_deref()).await.map_err(|e| fail(e.to_string()))?;
    let base = wt.head().await.map_err(|e| fail(e.to_string()))?;
    let main = &repo.spec().main_branch;
    let main_before = wt.local_branch_sha(main).await.map_err(|e| fail(e.to_string()))?;
    Ok(Tree { handle, wt, base, main_before, recorded })
}

impl Tree {
    /// Whether `item` as the store has it now is still what this worktree is at:
    /// the commit the store records, or with none recorded yet, the same none.
    fn still_fits(&self, item: &Item) -> bool {
        settled_fits(&self.handle.repo.spec().name, &self.wt.branch, &self.base, self.recorded.as_deref(), item)
    }

    /// The tree at `sha`, clean, the store recording it: what a push leaves.
    fn at(&self, sha: &str) -> Tree {
        Tree { base: sha.to_owned(), recorded: Some(sha.to_owned()), ..self.clone() }
    }
}

/// Whether a settled worktree of `repo` on `branch` at `base`, the store having
/// recorded `recorded` for it, is still what `item` (as read now) says.
fn settled_fits(repo: &str, branch: &str, base: &str, recorded: Option<&str>, item: &Item) -> bool {
    repo == item.repo
        && branch == branch_of(item)
        && recorded == item.head_sha.as_deref()
        && item.head_sha.as_deref().is_none_or(|h| h == base)
}

/// After a run: checks the agent stayed on its branch, commits what it changed,
/// pushes fenced by the SHA the store holds, records the push fenced by the job's
/// epoch, and opens or updates the item's pull request.
///
/// Returns the worktree as it is left when it is settled — clean, on its branch,
/// at the commit the store records — so that the next stage, if this node
/// claims it with the transition, starts there without asking git again
/// (`None` when it is not, e.g. this job's commit was found pushed by an
/// earlier run of it).
pub(crate) async fn after_run(
    ctx: &Ctx,
    job: &Job,
    item: &Item,
    tree: &Tree,
    role: &str,
) -> Result<Option<Tree>, AfterRun> {
    let repo = &tree.handle.repo;
    let main = repo.spec().main_branch.clone();
    // One `git status` serves the containment check and the commit.
    let status = match tree.wt.status(&main).await {
        Ok(status) => {
            tree.wt.check_contained(&status, &tree.base, &main, tree.main_before.as_deref()).await.map(|()| status)
        }
        Err(e) => Err(e),
    };
    let status = match status {
        Ok(status) => status,
        Err(e) => {
            let why = e.to_string();
            warn!(item = %job.item, job = %job.id, reason = %why, "agent left its branch; restoring it");
            if let Err(e) = tree.wt.restore(&tree.base, &main, tree.main_before.as_deref()).await {
                return Err(AfterRun::Infra(format!("{INFRA}cannot restore the branch after the agent left it: {e}")));
            }
            return Err(AfterRun::Contained(format!("{why}; the branch was restored to {}", short(&tree.base))));
        }
    };
    let infra = |e: orch_vcs::Error| AfterRun::Infra(format!("{INFRA}{e}"));
    // This very job pushed before (a record that failed after a push; a job
    // released at shutdown runs again under its id): the commit is on the
    // remote, already fetched by `prepare` at the start of this run; record it
    // rather than commit again. A job at epoch 1 is on its first run (every
    // release or recovery moves the epoch on), so it cannot have.
    let branch = tree.wt.branch.clone();
    let existing = if job.epoch > 1 {
        repo.find_job_commit(&branch, job.id.0, tree.recorded.as_deref()).await.map_err(infra)?
    } else {
        None
    };
    let mut settled = true;
    let (sha, committed) = match existing {
        Some(sha) => {
            info!(item = %job.item, job = %job.id, sha = %sha, "found this job's pushed commit; recording it");
            // The worktree may hold this run's changes, uncommitted.
            settled = false;
            (sha, false)
        }
        None if !status.changed => match status.head {
            // Nothing changed, no commit made: nothing to push.
            Some(head) if head == tree.base => return Ok(Some(tree.clone())),
            // An agent that commits by itself (as coding agents do) has moved HEAD:
            // that work is pushed too.
            Some(head) => (head, true),
            None => return Err(AfterRun::Infra(format!("{INFRA}the worktree's branch {branch} has no commit"))),
        },
        None => {
            let message = format!(
                "{role}({key}): auto-commit from {role} job {id}\n\nRefs: {key}\nOrch-Job: {id}\nOrch-Attempt: {n}\n",
                key = job.item,
                id = job.id,
                n = job.attempt
            );
            match tree.wt.commit_all(&message, &tree.handle.author).await.map_err(infra)? {
                Some(sha) => (sha, true),
                // git status saw a change that `add --all` did not stage: push
                // what HEAD has, but leave the worktree to a full preparation.
                None => {
                    settled = false;
                    let head = tree.wt.head().await.map_err(infra)?;
                    if head == tree.base {
                        return Ok(None);
                    }
                    (head, true)
                }
            }
        }
    };
    // An irreversible act: re-check the lease right before it.
    if !holds_lease(ctx, job).await {
        return Err(AfterRun::Fenced);
    }
    if committed {
        // Bounded by the lease: past the deadline this owner has fenced itself.
        let push = tokio::time::timeout_at(ctx.lease.deadline(), tree.wt.push_fenced(tree.recorded.as_deref()));
        let Ok(pushed) = push.await else { return Err(AfterRun::Fenced) };
        match pushed {
            Ok(()) => {}
            // Refused because the branch moved. If this node no longer holds the
            // job, another owner moved it: fenced. If it still does, something else
            // moved the branch (a stale owner's late push): not this owner's fault,
            // and not a reason to give the job up.
            Err(orch_vcs::Error::PushRejected { .. }) if !holds_lease(ctx, job).await => return Err(AfterRun::Fenced),
            Err(e) => return Err(infra(e)),
        }
    }
    let mut events = Vec::new();
    if committed {
        let mut c = NewEvent::new(job.item.clone(), EventKind::VcsCommitted);
        c.job = Some(job.id);
        c.epoch = Some(job.epoch);
        c.data = json!({ "sha": sha, "branch": branch, "role": role });
        events.push(c);
    }
    let mut p = NewEvent::new(job.item.clone(), EventKind::VcsPushed);
    p.job = Some(job.id);
    p.epoch = Some(job.epoch);
    p.data = json!({ "sha": sha, "branch": branch, "previous": tree.recorded });
    events.push(p);
    match ctx.within_lease(ctx.store.record_push(job.id, job.epoch, &branch, &sha, &events, ctx.now())).await {
        Ok(()) => {}
        Err(Error::Store(orch_store::Error::FencedOut { .. })) => return Err(AfterRun::Fenced),
        Err(e) => return Err(AfterRun::Infra(format!("{INFRA}cannot record the push: {e}"))),
    }
    if let Err(e) = upsert_pr(ctx, job, item, tree, &sha).await {
        warn!(item = %job.item, error = %e, "cannot open or update the pull request");
    }
    Ok(settled.then(|| tree.at(&sha)))
}

/// Opens the item's pull request at its first push, or moves its head.
async fn upsert_pr(ctx: &Ctx, job: &Job, item: &Item, tree: &Tree, sha: &str) -> Result<(), Error> {
    let spec = PrSpec {
        item: item.key.to_string(),
        repo: item.repo.clone(),
        title: format!("{}: {}", item.key, item.title),
        body: pr_body(ctx, item).await,
        branch: tree.wt.branch.clone(),
        head_sha: sha.to_owned(),
    };
    let (pr, created) = tree.handle.forge.open_or_update(&spec).await.map_err(|e| Error::Forge(e.to_string()))?;
    if created {
        let mut e = NewEvent::new(job.item.clone(), EventKind::PrOpened);
        e.job = Some(job.id);
        e.epoch = Some(job.epoch);
        e.data = json!({ "url": pr.url, "number": pr.number, "branch": spec.branch, "head_sha": sha });
        ctx.store.append_events(&[e], ctx.now()).await?;
    }
    Ok(())
}

/// The pull request's body: the item, then a line per finished job of it (stage,
/// attempt, how it ended and the verdict's summary), so a reviewer sees the
/// pipeline's story next to the diff.
async fn pr_body(ctx: &Ctx, item: &Item) -> String {
    use std::fmt::Write as _;
    let mut body = format!("{} ({}) on repo {}\n\n", item.key, item.kind, item.repo);
    if !item.body.is_empty() {
        let _ = writeln!(body, "{}\n", item.body.trim_end());
    }
    let jobs = ctx.store.jobs_for_item(&item.key).await.unwrap_or_default();
    let ended: Vec<_> = jobs.iter().filter(|j| j.finished_at.is_some()).collect();
    if !ended.is_empty() {
        let _ = writeln!(body, "## Stages\n");
        for j in ended {
            let summary = j
                .verdict
                .as_ref()
                .and_then(|v| v.get("summary"))
                .and_then(|s| s.as_str())
                .map(str::to_owned)
                .or_else(|| j.reason.clone())
                .unwrap_or_default();
            let _ = writeln!(body, "- {} (attempt {}, {}): {summary}", j.stage, j.attempt, j.status);
        }
    }
    body
}

/// Whether this node still owns `job` at its epoch right now, with a fresh lease:
/// asked of the store (bounded by the lease), not assumed.
async fn holds_lease(ctx: &Ctx, job: &Job) -> bool {
    let held = [(job.id, job.epoch)];
    let call = ctx.store.renew_leases(&ctx.opts.node_id, &held, ctx.now(), ctx.config.reaper.lease_ttl());
    matches!(ctx.within_lease(call).await, Ok(renewed) if renewed.contains(&job.id))
}

/// Merges the item's pull request into main (the last stage passed). `Ok(None)`
/// when merged (or already merged); `Ok(Some(reason))` for a conflict, which sends
/// the item back with the paths.
///
/// # Errors
/// Infrastructure failures (reason prefixed), or the job was fenced.
pub(crate) async fn merge(ctx: &Ctx, job: &Job, item: &Item) -> Result<Option<String>, AfterRun> {
    let Some(sha) = item.head_sha.clone() else {
        return Ok(None); // nothing was ever committed: nothing to merge
    };
    let handle = ctx.repos.get(ctx, &item.repo).await.map_err(|e| AfterRun::Infra(format!("{INFRA}{e}")))?;
    if !holds_lease(ctx, job).await {
        return Err(AfterRun::Fenced);
    }
    let message = format!("Merge {}: {}\n\nRefs: {}\n", item.key, item.title, item.key);
    // Bounded by the lease: an owner past its deadline must not still be merging.
    let key = item.key.to_string();
    let merge = tokio::time::timeout_at(ctx.lease.deadline(), handle.forge.merge(&key, &sha, &message));
    let Ok(merged) = merge.await else { return Err(AfterRun::Fenced) };
    let merge_sha = match merged {
        Ok(Merge::Merged { sha }) => sha,
        Ok(Merge::AlreadyMerged { main }) => main,
        Ok(Merge::Conflict { paths }) => {
            return Ok(Some(format!("merge conflict with {}: {}", handle.repo.spec().main_branch, paths.join(", "))));
        }
        Err(e) => return Err(AfterRun::Infra(format!("{INFRA}{e}"))),
    };
    info!(item = %item.key, job = %job.id, merge_sha = %merge_sha, "pr.merged");
    let mut e = NewEvent::new(item.key.clone(), EventKind::PrMerged);
    e.job = Some(job.id);
    e.epoch = Some(job.epoch);
    e.data = json!({ "merge_sha": merge_sha, "head_sha": sha });
    // The merge has landed: failing to log it must not turn it into a failure
    // (a retry would run the stage again on a merged item).
    if let Err(err) = ctx.store.append_events(&[e], ctx.now()).await {
        warn!(item = %item.key, error = %err, "cannot record pr.merged; the merge stands");
    }
    Ok(None)
}

/// Whether the item's recorded head is already in the remote's main: its merge
/// landed (perhaps by an owner that died before recording `done`). A finalizer
/// that finds this must not judge the work again — a red gate now would roll back
/// a merged item.
pub(crate) async fn already_merged(ctx: &Ctx, item: &Item) -> bool {
    if item.pr.as_ref().is_some_and(|p| p.state == "merged") {
        return true;
    }
    let Some(head) = &item.head_sha else { return false };
    let Ok(handle) = ctx.repos.get(ctx, &item.repo).await else { return false };
    let repo = &handle.repo;
    if repo.fetch().await.is_err() {
        return false;
    }
    match repo.remote_sha(&repo.spec().main_branch).await {
        Ok(Some(main)) => repo.descends(head, &main).await.unwrap_or(false),
        _ => false,
    }
}

/// Removes an ended item's worktree (best effort: a leftover is rebuilt or
/// removed next time).
pub(crate) async fn cleanup(ctx: &Ctx, item: &Item) {
    let Ok(handle) = ctx.repos.get(ctx, &item.repo).await else { return };
    if let Err(e) = handle.repo.remove_worktree(&ctx.layout.workdir(&item.key)).await {
        warn!(item = %item.key, error = %e, "cannot remove the worktree");
    }
}

/// Removes the worktrees of items that have ended (done, or cancelled by an
/// operator from anywhere) that this node still has. Runs with the reaper.
pub(crate) async fn sweep_worktrees(ctx: &Ctx) {
    let Ok(entries) = std::fs::read_dir(ctx.layout.root().join("work")) else { return };
    let keys: Vec<orch_core::ItemKey> =
        entries.flatten().filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok())).collect();
    for key in keys {
        if let Ok(Some(item)) = ctx.store.get_item(&key).await
            && item.status.is_terminal()
        {
            if item.status == orch_core::ItemStatus::Cancelled
                && let Ok(handle) = ctx.repos.get(ctx, &item.repo).await
                && let Err(e) = handle.forge.close(&key.to_string()).await
            {
                warn!(item = %key, error = %e, "cannot close the cancelled item's pull request");
            }
            cleanup(ctx, &item).await;
        }
    }
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(head: Option<&str>) -> Item {
        Item {
            key: "SHOP-1".parse().unwrap(),
            repo: "shop".into(),
            kind: orch_core::ItemKind::Bug,
            title: "t".into(),
            body: String::new(),
            track: orch_core::TrackName::new("quick"),
            stage: orch_core::StageName::new("testing"),
            status: orch_core::ItemStatus::Running,
            version: 3,
            attempts: std::collections::BTreeMap::new(),
            branch: Some("feature/SHOP-1-bug-t".into()),
            head_sha: head.map(str::to_owned),
            pr: None,
            created_at: orch_core::Timestamp::from_millis(0),
            updated_at: orch_core::Timestamp::from_millis(0),
        }
    }

    /// A settled worktree is taken only while the store still says what it is at;
    /// anything else (another push recorded, another branch or repo) goes through
    /// the full preparation.
    #[test]
    fn a_settled_worktree_fits_only_what_the_store_still_records() {
        let b = "feature/SHOP-1-bug-t";
        assert!(settled_fits("shop", b, "aaa", Some("aaa"), &item(Some("aaa"))));
        assert!(settled_fits("shop", b, "main-sha", None, &item(None)), "nothing pushed yet, on either side");
        assert!(!settled_fits("shop", b, "aaa", Some("aaa"), &item(Some("bbb"))), "a newer push recorded");
        assert!(!settled_fits("shop", b, "main-sha", None, &item(Some("bbb"))), "a push recorded since");
        assert!(!settled_fits("shop", b, "aaa", Some("aaa"), &item(None)), "the record went away");
        assert!(!settled_fits("shop", b, "zzz", Some("aaa"), &item(Some("aaa"))), "not at the recorded commit");
        assert!(!settled_fits("shop", "feature/other", "aaa", Some("aaa"), &item(Some("aaa"))), "another branch");
        assert!(!settled_fits("other", b, "aaa", Some("aaa"), &item(Some("aaa"))), "another repo");
    }
}
