//! One repository as orch sees it: a bare mirror of the remote under the node's
//! data directory, which every item worktree shares, and the operations the
//! pipeline needs — a worktree per item branch, fenced pushes, merges into main.
//!
//! The user's own working copy is never touched: `path` only names where the
//! remote is (its `origin`), and everything orch does happens in its mirror and
//! lands on the remote. Main changes only through [`Repo::merge_into_main`].

use std::path::{Path, PathBuf};

use tracing::info;

use crate::git::Git;
use crate::{Error, Merge};

/// Where a repository lives and which branch is its main line.
#[derive(Clone, Debug)]
pub struct RepoSpec {
    /// The config's repo name (for messages).
    pub name: String,
    /// The remote: a URL, or the path of a bare repository or a clone, as git
    /// accepts it for `git fetch`.
    pub remote: String,
    pub main_branch: String,
}

/// The author of orch's commits.
#[derive(Clone, Debug)]
pub struct Author {
    pub name: String,
    pub email: String,
}

impl Default for Author {
    fn default() -> Self {
        Self { name: "orch".to_owned(), email: "orch@localhost".to_owned() }
    }
}

impl Author {
    fn env(&self) -> [(&'static str, &str); 4] {
        [
            ("GIT_AUTHOR_NAME", self.name.as_str()),
            ("GIT_AUTHOR_EMAIL", self.email.as_str()),
            ("GIT_COMMITTER_NAME", self.name.as_str()),
            ("GIT_COMMITTER_EMAIL", self.email.as_str()),
        ]
    }
}

/// A repository's mirror and the operations on it.
#[derive(Clone, Debug)]
pub struct Repo {
    git: Git,
    spec: RepoSpec,
    mirror: PathBuf,
    /// Held by every command that writes the mirror's shared refs or worktree
    /// list (fetch, worktree add/remove, pushes): two of them at once in one
    /// repository fail on git's ref locks ("cannot lock ref").
    lock: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// A worktree of an item's branch.
#[derive(Clone, Debug)]
pub struct Worktree {
    git: Git,
    lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// The remote's URL, from the node's config.
    remote: String,
    pub path: PathBuf,
    pub branch: String,
}

/// A worktree as one `git status` sees it: enough to judge a run that ended
/// without asking git again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The branch HEAD is on (its short name); `None` when detached.
    pub branch: Option<String>,
    /// HEAD's commit; `None` on an unborn branch.
    pub head: Option<String>,
    /// Whether anything `git add --all` would stage is there: a tracked file
    /// changed or deleted, or an untracked file that is not ignored.
    pub changed: bool,
    /// The local main branch's commit in the worktree's repository, if any.
    pub main: Option<String>,
}

impl Status {
    /// Parses `git status --porcelain=v2 --branch`.
    fn parse(out: &str) -> Self {
        let mut status = Status { branch: None, head: None, changed: false, main: None };
        for line in out.lines() {
            if let Some(oid) = line.strip_prefix("# branch.oid ") {
                status.head = (oid != "(initial)").then(|| oid.to_owned());
            } else if let Some(name) = line.strip_prefix("# branch.head ") {
                status.branch = (name != "(detached)").then(|| name.to_owned());
            } else if !line.starts_with('#') && !line.is_empty() {
                status.changed = true;
            }
        }
        status
    }
}

impl Repo {
    /// A repo whose mirror is (or will be) at `mirror`.
    pub fn new(git: Git, spec: RepoSpec, mirror: PathBuf) -> Self {
        Self { git, spec, mirror, lock: std::sync::Arc::default() }
    }

    /// Runs a git command that writes the mirror's shared state, one at a time.
    async fn locked(&self, dir: &Path, args: &[&str]) -> Result<crate::git::Output, Error> {
        let _held = self.lock.lock().await;
        self.git.output(dir, args, &[]).await
    }

    /// [`Repo::locked`] that must succeed.
    async fn locked_ok(&self, dir: &Path, args: &[&str]) -> Result<String, Error> {
        let out = self.locked(dir, args).await?;
        if out.code == 0 {
            return Ok(out.stdout.trim_end().to_owned());
        }
        Err(Error::Failed {
            command: format!("git {}", args.join(" ")),
            code: out.code,
            stderr: out.stderr.trim().to_owned(),
        })
    }

    pub fn spec(&self) -> &RepoSpec {
        &self.spec
    }

    fn remote_ref(&self, branch: &str) -> String {
        format!("refs/remotes/origin/{branch}")
    }

    /// Makes the mirror if it does not exist, fetches, and checks that the remote
    /// has the main branch. Safe to call again: it is how a node makes sure it
    /// sees what other nodes pushed.
    ///
    /// # Errors
    /// `Error::NoMainBranch`, or the git failure (unreachable remote, not a repo).
    pub async fn ensure(&self) -> Result<(), Error> {
        if !self.mirror.join("HEAD").exists() {
            std::fs::create_dir_all(&self.mirror)
                .map_err(|source| Error::Io { path: self.mirror.display().to_string(), source })?;
            let m = self.mirror.as_path();
            self.git.run(m, &["init", "--bare", "--quiet"]).await?;
            self.git.run(m, &["remote", "add", "origin", &self.spec.remote]).await?;
            info!(repo = %self.spec.name, mirror = %m.display(), "mirror created");
        } else {
            let url = self.git.run(&self.mirror, &["remote", "get-url", "origin"]).await?;
            if url != self.spec.remote {
                self.git.run(&self.mirror, &["remote", "set-url", "origin", &self.spec.remote]).await?;
            }
        }
        self.fetch().await?;
        if self.remote_sha(&self.spec.main_branch).await?.is_none() {
            return Err(Error::NoMainBranch { repo: self.spec.name.clone(), branch: self.spec.main_branch.clone() });
        }
        Ok(())
    }

    /// Fetches every branch of the remote into `refs/remotes/origin/*`.
    ///
    /// # Errors
    /// The git failure (e.g. the remote is unreachable).
    pub async fn fetch(&self) -> Result<(), Error> {
        // The remote's URL from the config, not `origin`: an agent can rewrite the
        // mirror's remote settings (url, pushurl), never the node's config.
        let url = self.spec.remote.as_str();
        self.locked_ok(&self.mirror, &["fetch", "--prune", "--quiet", url, "+refs/heads/*:refs/remotes/origin/*"])
            .await
            .map(|_| ())
    }

    /// The remote branch's SHA as last fetched, if it exists.
    ///
    /// # Errors
    /// A git failure other than "no such ref".
    pub async fn remote_sha(&self, branch: &str) -> Result<Option<String>, Error> {
        let r = self.remote_ref(branch);
        let out = self
            .git
            .output(&self.mirror, &["rev-parse", "--verify", "--quiet", &format!("{r}^{{commit}}")], &[])
            .await?;
        Ok((out.code == 0).then(|| out.stdout.trim().to_owned()))
    }

    /// The item's worktree at `path` on `branch`, created or reused. `at` is the
    /// SHA the store records for the branch (the last push orch committed to);
    /// without one the branch starts at the remote's main. A node that never saw
    /// the branch fetches it first: the worktree is never assumed to be local.
    ///
    /// # Errors
    /// `Error::ForeignBranch` when the remote has a branch of that name that orch
    /// did not create and the store knows nothing of; `Error::UnknownCommit` when
    /// the recorded SHA cannot be found even after a fetch; git failures.
    pub async fn worktree(&self, path: &Path, branch: &str, at: Option<&str>) -> Result<Worktree, Error> {
        let wt = Worktree {
            git: self.git.clone(),
            lock: std::sync::Arc::clone(&self.lock),
            remote: self.spec.remote.clone(),
            path: path.to_path_buf(),
            branch: branch.to_owned(),
        };
        let start = match at {
            Some(sha) => {
                if !self.has_commit(sha).await? {
                    self.fetch().await?;
                    if !self.has_commit(sha).await? {
                        return Err(Error::UnknownCommit { branch: branch.to_owned(), sha: sha.to_owned() });
                    }
                }
                sha.to_owned()
            }
            None => {
                if let Some(tip) = self.remote_sha(branch).await? {
                    if !self.created_by_orch(&tip).await? {
                        return Err(Error::ForeignBranch { repo: self.spec.name.clone(), branch: branch.to_owned() });
                    }
                    tip
                } else {
                    self.remote_sha(&self.spec.main_branch).await?.ok_or_else(|| Error::NoMainBranch {
                        repo: self.spec.name.clone(),
                        branch: self.spec.main_branch.clone(),
                    })?
                }
            }
        };
        if path.join(".git").exists() && !self.is_our_worktree(path).await {
            // The agent replaced the worktree's `.git` (a repository of its own, or a
            // pointer elsewhere): never run checkout/reset/clean there. Rebuild.
            tracing::warn!(path = %path.display(), "worktree's .git is not the mirror's; rebuilding it");
            std::fs::remove_dir_all(path).map_err(|source| Error::Io { path: path.display().to_string(), source })?;
        }
        if path.join(".git").exists() {
            // Reuse: if the worktree is on the branch at the right commit with no
            // changes, leave it be (ignored files such as build outputs survive
            // between stages); else put the branch back where the store says it
            // is and drop stray changes.
            let on = wt.git.output(path, &["symbolic-ref", "--quiet", "HEAD"], &[]).await?;
            let head = wt.git.output(path, &["rev-parse", "HEAD"], &[]).await?;
            let dirty = wt.git.run(path, &["status", "--porcelain"]).await?;
            let settled =
                on.stdout.trim() == format!("refs/heads/{branch}") && head.stdout.trim() == start && dirty.is_empty();
            if !settled {
                wt.git.run(path, &["checkout", "--quiet", "--force", "-B", branch, &start]).await?;
                wt.git.run(path, &["reset", "--quiet", "--hard", &start]).await?;
                wt.git.run(path, &["clean", "-fdq"]).await?;
            }
        } else {
            if path.exists() {
                std::fs::remove_dir_all(path)
                    .map_err(|source| Error::Io { path: path.display().to_string(), source })?;
            }
            self.locked_ok(&self.mirror, &["worktree", "prune"]).await?;
            let p = path.display().to_string();
            self.locked_ok(&self.mirror, &["worktree", "add", "--quiet", "--force", "-B", branch, &p, &start]).await?;
        }
        Ok(wt)
    }

    /// Whether `path` is a worktree of this mirror: its `.git` is a regular file
    /// (not a directory or link an agent made) and resolves to the mirror.
    async fn is_our_worktree(&self, path: &Path) -> bool {
        let dot_git = path.join(".git");
        if !std::fs::symlink_metadata(&dot_git).is_ok_and(|m| m.file_type().is_file()) {
            return false;
        }
        let Ok(out) = self.git.output(path, &["rev-parse", "--path-format=absolute", "--git-common-dir"], &[]).await
        else {
            return false;
        };
        let common = std::fs::canonicalize(out.stdout.trim()).ok();
        out.code == 0 && common.is_some() && common == std::fs::canonicalize(&self.mirror).ok()
    }

    /// Whether the worktree at `path` is still exactly as a run left it: its `.git`
    /// is the file git wrote when this mirror made it (not a repository or link
    /// an agent put there), its administrative folder in the mirror points back
    /// at it and at the mirror, its HEAD is on `branch`, and `branch` is at
    /// `sha`. Read from the files, without running git: the quick check of a
    /// worktree reused between two stages. Anything unexpected, or a ref git
    /// has packed, answers `false`, and the caller prepares the worktree in full.
    pub fn worktree_is_at(&self, path: &Path, branch: &str, sha: &str) -> bool {
        let regular = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_file());
        let read = |p: &Path| if regular(p) { std::fs::read_to_string(p).ok() } else { None };
        let canon = |p: &Path| std::fs::canonicalize(p).ok();
        let dot_git = path.join(".git");
        let Some(text) = read(&dot_git) else { return false };
        let Some(admin) = text.trim_end().strip_prefix("gitdir: ").map(PathBuf::from) else { return false };
        let (Some(admin), Some(mirror)) = (canon(&admin), canon(&self.mirror)) else { return false };
        if admin.parent() != Some(mirror.join("worktrees").as_path()) {
            return false;
        }
        let back = read(&admin.join("gitdir")).and_then(|t| canon(Path::new(t.trim_end())));
        let common = read(&admin.join("commondir")).and_then(|t| canon(&admin.join(t.trim_end())));
        let head = read(&admin.join("HEAD"));
        let tip = read(&mirror.join("refs/heads").join(branch));
        back.is_some()
            && back == canon(&dot_git)
            && common.as_ref() == Some(&mirror)
            && head.as_deref().map(str::trim_end) == Some(format!("ref: refs/heads/{branch}").as_str())
            && tip.as_deref().map(str::trim_end) == Some(sha)
    }

    /// Removes an item's worktree (done or cancelled items).
    ///
    /// # Errors
    /// The git failure.
    pub async fn remove_worktree(&self, path: &Path) -> Result<(), Error> {
        if path.exists() {
            let p = path.display().to_string();
            self.locked_ok(&self.mirror, &["worktree", "remove", "--force", &p]).await?;
        }
        self.locked_ok(&self.mirror, &["worktree", "prune"]).await.map(|_| ())
    }

    /// Whether `tip` descends from `ancestor` (or is it).
    ///
    /// # Errors
    /// Git failures.
    pub async fn descends(&self, ancestor: &str, tip: &str) -> Result<bool, Error> {
        let out = self.git.output(&self.mirror, &["merge-base", "--is-ancestor", ancestor, tip], &[]).await?;
        Ok(out.code == 0)
    }

    /// Whether every commit on `tip` that is not on `base` (default: the remote's
    /// main) is orch's work on `key` (carries a `Refs: <key>` trailer and an
    /// `Orch-Job` one, or is a merge made on the branch by such work).
    ///
    /// # Errors
    /// Git failures.
    pub async fn all_orch_work(&self, base: Option<&str>, tip: &str, key: &str) -> Result<bool, Error> {
        let base = match base {
            Some(b) => b.to_owned(),
            None => self.remote_ref(&self.spec.main_branch),
        };
        let range = format!("{base}..{tip}");
        let out = self
            .git
            .run(
                &self.mirror,
                &[
                    "log",
                    "--no-merges",
                    "--format=%(trailers:key=Refs,valueonly,separator=%x2C)|%(trailers:key=Orch-Job,valueonly,separator=%x2C)",
                    &range,
                ],
            )
            .await?;
        Ok(out.lines().filter(|l| !l.trim().is_empty()).all(|l| {
            let (refs, job) = l.split_once('|').unwrap_or((l, ""));
            refs.split(',').any(|r| r.trim() == key) && !job.trim().is_empty()
        }))
    }

    async fn has_commit(&self, sha: &str) -> Result<bool, Error> {
        let out = self.git.output(&self.mirror, &["cat-file", "-e", &format!("{sha}^{{commit}}")], &[]).await?;
        Ok(out.code == 0)
    }

    /// Whether the commit at `tip` was made by orch (carries an `Orch-Job` trailer).
    async fn created_by_orch(&self, tip: &str) -> Result<bool, Error> {
        let out =
            self.git.run(&self.mirror, &["log", "-1", "--format=%(trailers:key=Orch-Job,valueonly)", tip]).await?;
        Ok(!out.trim().is_empty())
    }

    /// The commit on the remote `branch` after `since` (the SHA the store holds;
    /// `None`: after main) that job `job` made, found by its `Orch-Job` trailer:
    /// after a crash between push and store commit, the retry finds it and does
    /// not commit again.
    ///
    /// # Errors
    /// Git failures.
    pub async fn find_job_commit(&self, branch: &str, job: i64, since: Option<&str>) -> Result<Option<String>, Error> {
        let Some(tip) = self.remote_sha(branch).await? else { return Ok(None) };
        // Only commits after the one the store recorded: a trailer in older history
        // (an agent can write any message) must never move the branch backwards.
        let base = since.map_or_else(|| self.remote_ref(&self.spec.main_branch), str::to_owned);
        let range = format!("{base}..{tip}");
        let out = self
            .git
            .run(
                &self.mirror,
                &["log", "--format=%H %(trailers:key=Orch-Job,valueonly,separator=%x2C)", "-n", "200", &range],
            )
            .await?;
        let want = job.to_string();
        Ok(out.lines().find_map(|l| {
            let (sha, jobs) = l.split_once(' ')?;
            jobs.split(',').any(|j| j.trim() == want).then(|| sha.to_owned())
        }))
    }

    /// Merges `sha` (the item branch's tip) into the remote's main in a temporary
    /// worktree and pushes main. A main that moved meanwhile means fetch and merge
    /// again (never force); a `sha` already in main is success.
    ///
    /// # Errors
    /// Git failures other than a conflict (which is an outcome, not an error).
    pub async fn merge_into_main(
        &self,
        sha: &str,
        message: &str,
        author: &Author,
        scratch: &Path,
    ) -> Result<Merge, Error> {
        let main = self.spec.main_branch.clone();
        for _ in 0..5 {
            self.fetch().await?;
            let Some(main_sha) = self.remote_sha(&main).await? else {
                return Err(Error::NoMainBranch { repo: self.spec.name.clone(), branch: main });
            };
            let ancestor = self.git.output(&self.mirror, &["merge-base", "--is-ancestor", sha, &main_sha], &[]).await?;
            if ancestor.code == 0 {
                return Ok(Merge::AlreadyMerged { main: main_sha });
            }
            let outcome = self.merge_in(scratch, &main_sha, sha, message, author).await?;
            let merged = match outcome {
                MergeTry::Conflict(paths) => return Ok(Merge::Conflict { paths }),
                MergeTry::Merged(m) => m,
            };
            let push = self
                .locked(&self.mirror, &["push", "--quiet", &self.spec.remote, &format!("{merged}:refs/heads/{main}")])
                .await?;
            if push.code == 0 {
                // Main holds the merge now: a failed fetch after it must not turn
                // a landed merge into an error (the next fetch catches up).
                if let Err(e) = self.fetch().await {
                    tracing::warn!(repo = %self.spec.name, error = %e, "fetch after the merge failed");
                }
                return Ok(Merge::Merged { sha: merged });
            }
            if !is_rejection(&push.stderr) {
                return Err(Error::Failed {
                    command: format!("git push origin {merged}:refs/heads/{main}"),
                    code: push.code,
                    stderr: push.stderr.trim().to_owned(),
                });
            }
            info!(repo = %self.spec.name, "main moved while merging; merging again");
        }
        Err(Error::MainKeepsMoving { repo: self.spec.name.clone() })
    }

    async fn merge_in(
        &self,
        scratch: &Path,
        main_sha: &str,
        sha: &str,
        message: &str,
        author: &Author,
    ) -> Result<MergeTry, Error> {
        if scratch.exists() {
            let _ = self.remove_worktree(scratch).await;
            let _ = std::fs::remove_dir_all(scratch);
        }
        let p = scratch.display().to_string();
        self.locked_ok(&self.mirror, &["worktree", "add", "--quiet", "--detach", &p, main_sha]).await?;
        let env = author.env();
        let out = self.git.output(scratch, &["merge", "--no-ff", "--quiet", "-m", message, sha], &env).await?;
        let result = if out.code == 0 {
            MergeTry::Merged(self.git.run(scratch, &["rev-parse", "HEAD"]).await?)
        } else {
            let paths = self.git.run(scratch, &["diff", "--name-only", "--diff-filter=U"]).await.unwrap_or_default();
            let paths: Vec<String> = paths.lines().map(str::to_owned).collect();
            if paths.is_empty() {
                let _ = self.remove_worktree(scratch).await;
                return Err(Error::Failed {
                    command: format!("git merge {sha}"),
                    code: out.code,
                    stderr: out.stderr.trim().to_owned(),
                });
            }
            let _ = self.git.run(scratch, &["merge", "--abort"]).await;
            MergeTry::Conflict(paths)
        };
        self.remove_worktree(scratch).await?;
        Ok(result)
    }
}

/// The remote a repo entry names: `url` as given, or the `origin` of the local
/// clone at `path` (a relative origin resolved against the clone). orch never
/// works in that clone; it only learns where the remote is.
///
/// # Errors
/// `Error::NotARepo` when `path` is not a git repository, `Error::NoRemote` when
/// it has no `origin`.
pub async fn resolve_remote(git: &Git, repo: &str, path: Option<&Path>, url: Option<&str>) -> Result<String, Error> {
    if let Some(url) = url {
        return Ok(url.to_owned());
    }
    let Some(path) = path else { return Err(Error::NoRemote { repo: repo.to_owned(), path: String::new() }) };
    let shown = path.display().to_string();
    if !path.exists() {
        return Err(Error::NotARepo { repo: repo.to_owned(), path: shown, why: "no such folder".to_owned() });
    }
    let inside = git.output(path, &["rev-parse", "--is-bare-repository", "--show-toplevel"], &[]).await?;
    if inside.code != 0 && !inside.stdout.starts_with("true") {
        return Err(Error::NotARepo { repo: repo.to_owned(), path: shown, why: inside.stderr.trim().to_owned() });
    }
    let mut lines = inside.stdout.lines();
    let bare = lines.next() == Some("true");
    if !bare {
        // A folder inside some other repository is not a clone of this repo's remote.
        let top = lines.next().map(std::path::PathBuf::from);
        let canon = std::fs::canonicalize(path).ok();
        if top.and_then(|t| std::fs::canonicalize(t).ok()) != canon {
            return Err(Error::NotARepo {
                repo: repo.to_owned(),
                path: shown,
                why: "it is a folder inside another repository, not the root of a clone".to_owned(),
            });
        }
    }
    let out = git.output(path, &["remote", "get-url", "origin"], &[]).await?;
    if out.code != 0 {
        return Err(Error::NoRemote { repo: repo.to_owned(), path: shown });
    }
    let origin = out.stdout.trim().to_owned();
    // A local path relative to the clone (`../remote.git`) means nothing from
    // anywhere else: make it absolute.
    let looks_local = !origin.contains("://") && !origin.contains('@') && !origin.starts_with('/');
    if looks_local && path.join(&origin).exists() {
        return Ok(std::fs::canonicalize(path.join(&origin)).map_or(origin, |p| p.display().to_string()));
    }
    Ok(origin)
}

/// A merge of an item's commit with the current main, checked out for a
/// merge-preview gate: what will land, not the branch alone.
#[derive(Debug)]
pub enum Preview {
    /// The merged tree is checked out at this path.
    Ready(PathBuf),
    /// The branch conflicts with main in these paths.
    Conflict(Vec<String>),
}

impl Repo {
    /// Checks out `sha` merged with the remote's current main at `path` (a
    /// detached temporary worktree; remove it with [`Repo::remove_worktree`]).
    ///
    /// # Errors
    /// Git failures other than a conflict.
    pub async fn merge_preview(&self, sha: &str, path: &Path, author: &Author) -> Result<Preview, Error> {
        self.fetch().await?;
        let main = self.remote_sha(&self.spec.main_branch).await?.ok_or_else(|| Error::NoMainBranch {
            repo: self.spec.name.clone(),
            branch: self.spec.main_branch.clone(),
        })?;
        if path.exists() {
            let _ = self.remove_worktree(path).await;
            let _ = std::fs::remove_dir_all(path);
        }
        let p = path.display().to_string();
        self.locked_ok(&self.mirror, &["worktree", "add", "--quiet", "--detach", &p, &main]).await?;
        let out =
            self.git.output(path, &["merge", "--no-ff", "--quiet", "-m", "merge preview", sha], &author.env()).await?;
        if out.code == 0 {
            return Ok(Preview::Ready(path.to_path_buf()));
        }
        let paths = self.git.run(path, &["diff", "--name-only", "--diff-filter=U"]).await.unwrap_or_default();
        let _ = self.remove_worktree(path).await;
        let paths: Vec<String> = paths.lines().map(str::to_owned).collect();
        if paths.is_empty() {
            return Err(Error::Failed {
                command: format!("git merge {sha}"),
                code: out.code,
                stderr: out.stderr.trim().to_owned(),
            });
        }
        Ok(Preview::Conflict(paths))
    }
}

enum MergeTry {
    Merged(String),
    Conflict(Vec<String>),
}

/// Whether git's push output says the remote refused the update as not a
/// fast-forward or a stale lease (as opposed to any other failure).
fn is_rejection(stderr: &str) -> bool {
    stderr.contains("[rejected]")
        || stderr.contains("stale info")
        || stderr.contains("non-fast-forward")
        || stderr.contains("fetch first")
}

impl Worktree {
    /// The worktree's HEAD commit.
    ///
    /// # Errors
    /// Git failures.
    pub async fn head(&self) -> Result<String, Error> {
        self.git.run(&self.path, &["rev-parse", "HEAD"]).await
    }

    /// Commits every change in the worktree (added, changed, deleted) as `author`
    /// with `message`; `None` when nothing changed.
    ///
    /// # Errors
    /// Git failures.
    pub async fn commit_all(&self, message: &str, author: &Author) -> Result<Option<String>, Error> {
        self.git.run(&self.path, &["add", "--all"]).await?;
        let staged = self.git.output(&self.path, &["diff", "--cached", "--quiet"], &[]).await?;
        if staged.code == 0 {
            return Ok(None);
        }
        self.git.run_env(&self.path, &["commit", "--quiet", "--no-verify", "-m", message], &author.env()).await?;
        self.head().await.map(Some)
    }

    /// Pushes the branch to the remote, fenced by git's own compare-and-swap: the
    /// remote branch must still be at `expected` (the SHA the store holds; `None`
    /// = the branch must not exist yet). A stale owner can never move the branch.
    ///
    /// # Errors
    /// `Error::PushRejected` when the remote branch is not at `expected`; git failures.
    pub async fn push_fenced(&self, expected: Option<&str>) -> Result<(), Error> {
        let b = &self.branch;
        let lease = format!("--force-with-lease=refs/heads/{b}:{}", expected.unwrap_or(""));
        let target = format!("HEAD:refs/heads/{b}");
        let out = {
            let _held = self.lock.lock().await;
            self.git.output(&self.path, &["push", "--quiet", "--porcelain", &lease, &self.remote, &target], &[]).await?
        };
        if out.code == 0 {
            return Ok(());
        }
        let text = format!("{}{}", out.stdout, out.stderr);
        if is_rejection(&text) {
            return Err(Error::PushRejected { branch: b.clone(), expected: expected.unwrap_or("(none)").to_owned() });
        }
        Err(Error::Failed {
            command: format!("git push {lease} origin HEAD:refs/heads/{b}"),
            code: out.code,
            stderr: text.trim().to_owned(),
        })
    }

    /// The worktree's branch, HEAD, whether it has changes, and where the local
    /// `main_branch` is: two git calls, run at once.
    ///
    /// # Errors
    /// Git failures (a worktree an agent broke).
    pub async fn status(&self, main_branch: &str) -> Result<Status, Error> {
        let (status, main) = tokio::join!(
            // Without the optional index lock: no index write (a third of the
            // call's time), and a stray `index.lock` an agent left cannot fail it.
            // Untracked files are asked for on the command line: the mirror's
            // config, which an agent can write, could say `showUntrackedFiles = no`.
            // And submodules are never ignored, nor the untracked cache (kept in
            // the index, which the agent can write) trusted: `add --all`, which
            // this call stands in for, consults neither.
            self.git.run(
                &self.path,
                &[
                    "-c",
                    "core.untrackedCache=false",
                    "--no-optional-locks",
                    "status",
                    "--porcelain=v2",
                    "--branch",
                    "--untracked-files=normal",
                    "--ignore-submodules=none",
                ],
            ),
            self.local_branch_sha(main_branch)
        );
        Ok(Status { main: main?, ..Status::parse(&status?) })
    }

    /// Checks that an agent left the worktree on its branch, descending from
    /// `base` (the SHA the run started at), and did not touch `main`: an agent may
    /// add commits, never switch branches or rewrite what was pushed. `status` is
    /// the worktree's as read after the run, with the same `main_branch`.
    ///
    /// # Errors
    /// `Error::Contained` naming what the agent did.
    pub async fn check_contained(
        &self,
        status: &Status,
        base: &str,
        main_branch: &str,
        main_before: Option<&str>,
    ) -> Result<(), Error> {
        let Some(on) = status.branch.as_deref() else {
            return Err(Error::Contained { what: "the agent detached HEAD from the item branch".to_owned() });
        };
        if on != self.branch {
            return Err(Error::Contained {
                what: format!("the agent checked out refs/heads/{on} instead of the item branch"),
            });
        }
        // HEAD still at the base needs no ancestry walk.
        if status.head.as_deref() != Some(base) {
            let desc = self.git.output(&self.path, &["merge-base", "--is-ancestor", base, "HEAD"], &[]).await?;
            if desc.code != 0 {
                return Err(Error::Contained {
                    what: format!("the agent rewrote pushed history (HEAD no longer descends from {base})"),
                });
            }
        }
        if status.main.as_deref() != main_before {
            return Err(Error::Contained { what: format!("the agent committed on {main_branch}") });
        }
        Ok(())
    }

    /// The local `main_branch` ref's SHA in this worktree's repository, if any
    /// (recorded before a run so [`Worktree::check_contained`] can tell if it moved).
    ///
    /// # Errors
    /// Git failures.
    pub async fn local_branch_sha(&self, branch: &str) -> Result<Option<String>, Error> {
        let out = self
            .git
            .output(&self.path, &["rev-parse", "--verify", "--quiet", &format!("refs/heads/{branch}")], &[])
            .await?;
        Ok((out.code == 0).then(|| out.stdout.trim().to_owned()))
    }

    /// Puts the branch and the files back at `sha`, undoing whatever an agent did.
    ///
    /// # Errors
    /// Git failures.
    pub async fn restore(&self, sha: &str, main_branch: &str, main_sha: Option<&str>) -> Result<(), Error> {
        let _ = self.git.run(&self.path, &["merge", "--abort"]).await;
        let _ = self.git.run(&self.path, &["rebase", "--abort"]).await;
        self.git.run(&self.path, &["checkout", "--quiet", "--force", "-B", &self.branch, sha]).await?;
        self.git.run(&self.path, &["clean", "-fdq"]).await?;
        match main_sha {
            Some(m) => self.git.run(&self.path, &["branch", "--quiet", "--force", main_branch, m]).await.map(|_| ()),
            None => {
                let _ = self.git.run(&self.path, &["branch", "--quiet", "-D", main_branch]).await;
                Ok(())
            }
        }
    }
}
