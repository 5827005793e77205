//! orch-vcs against the real `git`: a bare "remote" in a temporary folder (with a
//! pre-receive hook that lets main change only by a merge commit named for an
//! item), a user's clone whose `origin` it is, and orch's mirror and worktrees.

use std::path::{Path, PathBuf};
use std::process::Command;

use orch_vcs::{Author, Error, Git, Merge, Repo, RepoSpec};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").args(args).current_dir(dir).env("LC_ALL", "C").output().unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

struct World {
    dir: tempfile::TempDir,
    remote: PathBuf,
    user: PathBuf,
    repo: Repo,
}

impl World {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let remote = dir.path().join("remote.git");
        let user = dir.path().join("user");
        git(dir.path(), &["init", "--bare", "--quiet", "-b", "main", remote.to_str().unwrap()]);
        git(dir.path(), &["clone", "--quiet", remote.to_str().unwrap(), user.to_str().unwrap()]);
        std::fs::write(user.join("README.md"), "hello\n").unwrap();
        std::fs::write(user.join("app.txt"), "line 1\nline 2\nline 3\n").unwrap();
        git(&user, &["add", "."]);
        git(&user, &["-c", "user.name=u", "-c", "user.email=u@x", "commit", "--quiet", "-m", "initial"]);
        git(&user, &["push", "--quiet", "origin", "HEAD:main"]);
        // orch must never change main but by an item's merge.
        orch_test_support::install_hook(&remote, "pre-receive", orch_test_support::PRE_RECEIVE_ONLY_ITEM_MERGES);
        let spec = RepoSpec { name: "shop".into(), remote: remote.display().to_string(), main_branch: "main".into() };
        let repo = Repo::new(Git::default(), spec, dir.path().join("data/repos/shop.git"));
        Self { dir, remote, user, repo }
    }

    fn wt(&self, name: &str) -> PathBuf {
        self.dir.path().join("data/work").join(name)
    }

    fn remote_sha(&self, branch: &str) -> Option<String> {
        let out = Command::new("git")
            .args(["rev-parse", "--verify", "--quiet", &format!("refs/heads/{branch}")])
            .current_dir(&self.remote)
            .output()
            .unwrap();
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

fn msg(job: i64) -> String {
    format!(
        "developer(SHOP-1): auto-commit from developer job {job}\n\nRefs: SHOP-1\nOrch-Job: {job}\nOrch-Attempt: 1\n"
    )
}

#[tokio::test]
async fn branch_commit_fenced_push_and_merge_reach_main_only_through_the_merge() {
    let w = World::new();
    w.repo.ensure().await.unwrap();
    let main_before = w.remote_sha("main").unwrap();
    let branch = "feature/SHOP-1-bug-fix-it";
    let wt = w.repo.worktree(&w.wt("SHOP-1"), branch, None).await.unwrap();
    assert_eq!(wt.head().await.unwrap(), main_before, "a new branch starts at the remote's main");
    assert_eq!(wt.commit_all(&msg(1), &Author::default()).await.unwrap(), None, "nothing changed, nothing committed");

    std::fs::write(wt.path.join("fix.txt"), "fixed\n").unwrap();
    let c1 = wt.commit_all(&msg(1), &Author::default()).await.unwrap().expect("a commit");
    wt.push_fenced(None).await.unwrap();
    assert_eq!(w.remote_sha(branch).as_deref(), Some(c1.as_str()));
    assert_eq!(w.remote_sha("main").unwrap(), main_before, "main unchanged by the item's push");
    let trailers = git(&w.remote, &["log", "-1", "--format=%(trailers)", &c1]);
    assert!(trailers.contains("Refs: SHOP-1") && trailers.contains("Orch-Job: 1"), "{trailers}");

    // A stale owner on another node (who still thinks the branch is absent)
    // cannot move it.
    let spec = RepoSpec { name: "shop".into(), remote: w.remote.display().to_string(), main_branch: "main".into() };
    let other = Repo::new(Git::default(), spec, w.dir.path().join("data-b/repos/shop.git"));
    other.ensure().await.unwrap();
    let stale = other.worktree(&w.dir.path().join("data-b/work/SHOP-1"), branch, Some(&main_before)).await.unwrap();
    std::fs::write(stale.path.join("other.txt"), "stale\n").unwrap();
    stale.commit_all(&msg(9), &Author::default()).await.unwrap();
    let refused = stale.push_fenced(None).await.unwrap_err();
    assert!(matches!(refused, Error::PushRejected { .. }), "{refused}");
    let refused = stale.push_fenced(Some(&main_before)).await.unwrap_err();
    assert!(matches!(refused, Error::PushRejected { .. }), "{refused}");
    assert_eq!(w.remote_sha(branch).as_deref(), Some(c1.as_str()), "the branch did not move");

    // A retry after a crash between push and store commit finds its commit.
    w.repo.fetch().await.unwrap();
    assert_eq!(w.repo.find_job_commit(branch, 1, None).await.unwrap().as_deref(), Some(c1.as_str()));
    assert_eq!(w.repo.find_job_commit(branch, 2, None).await.unwrap(), None);

    let scratch = w.dir.path().join("data/merge");
    let merged = w
        .repo
        .merge_into_main(&c1, "Merge SHOP-1: Fix it\n\nRefs: SHOP-1\n", &Author::default(), &scratch)
        .await
        .unwrap();
    let Merge::Merged { sha } = merged else { panic!("{merged:?}") };
    assert_eq!(w.remote_sha("main").as_deref(), Some(sha.as_str()));
    assert_eq!(git(&w.remote, &["log", "-1", "--format=%s", "main"]), "Merge SHOP-1: Fix it");
    let again = w.repo.merge_into_main(&c1, "Merge SHOP-1: Fix it\n", &Author::default(), &scratch).await.unwrap();
    assert!(matches!(again, Merge::AlreadyMerged { .. }), "merging a merged item is success: {again:?}");
    assert!(!scratch.exists(), "the merge worktree is removed");
}

#[tokio::test]
async fn a_main_that_moved_is_merged_again_and_a_conflict_names_its_paths() {
    let w = World::new();
    w.repo.ensure().await.unwrap();
    let a = w.repo.worktree(&w.wt("SHOP-1"), "feature/SHOP-1-bug-a", None).await.unwrap();
    std::fs::write(a.path.join("a.txt"), "a\n").unwrap();
    let ca = a.commit_all(&msg(1), &Author::default()).await.unwrap().unwrap();
    a.push_fenced(None).await.unwrap();
    let b = w.repo.worktree(&w.wt("SHOP-2"), "feature/SHOP-2-bug-b", None).await.unwrap();
    std::fs::write(b.path.join("app.txt"), "line 1\nB\nline 3\n").unwrap();
    let cb = b.commit_all(&msg(2), &Author::default()).await.unwrap().unwrap();
    b.push_fenced(None).await.unwrap();
    let c = w.repo.worktree(&w.wt("SHOP-3"), "feature/SHOP-3-bug-c", None).await.unwrap();
    std::fs::write(c.path.join("app.txt"), "line 1\nC\nline 3\n").unwrap();
    let cc = c.commit_all(&msg(3), &Author::default()).await.unwrap().unwrap();
    c.push_fenced(None).await.unwrap();

    let scratch = w.dir.path().join("data/merge");
    let author = Author::default();
    assert!(matches!(
        w.repo.merge_into_main(&cb, "Merge SHOP-2: b\n", &author, &scratch).await.unwrap(),
        Merge::Merged { .. }
    ));
    // SHOP-1 was branched before SHOP-2 merged: main moved, and it merges again.
    assert!(matches!(
        w.repo.merge_into_main(&ca, "Merge SHOP-1: a\n", &author, &scratch).await.unwrap(),
        Merge::Merged { .. }
    ));
    let conflict = w.repo.merge_into_main(&cc, "Merge SHOP-3: c\n", &author, &scratch).await.unwrap();
    assert_eq!(conflict, Merge::Conflict { paths: vec!["app.txt".into()] });
    assert!(!scratch.exists());
    let main = git(&w.remote, &["log", "--first-parent", "--format=%s", "main"]);
    assert_eq!(main.lines().collect::<Vec<_>>(), vec!["Merge SHOP-1: a", "Merge SHOP-2: b", "initial"]);
}

#[tokio::test]
async fn a_branch_orch_did_not_create_is_never_overwritten() {
    let w = World::new();
    git(&w.user, &["push", "--quiet", "origin", "HEAD:refs/heads/feature/SHOP-1-bug-x"]);
    w.repo.ensure().await.unwrap();
    let err = w.repo.worktree(&w.wt("SHOP-1"), "feature/SHOP-1-bug-x", None).await.unwrap_err();
    assert!(matches!(err, Error::ForeignBranch { .. }), "{err}");
}

#[tokio::test]
async fn an_agent_that_leaves_its_branch_is_caught_and_undone() {
    let w = World::new();
    w.repo.ensure().await.unwrap();
    let branch = "feature/SHOP-1-bug-y";
    let wt = w.repo.worktree(&w.wt("SHOP-1"), branch, None).await.unwrap();
    let base = wt.head().await.unwrap();
    let main_before = wt.local_branch_sha("main").await.unwrap();
    wt.check_contained(&wt.status("main").await.unwrap(), &base, "main", main_before.as_deref()).await.unwrap();

    // Commits on main in the worktree's repository.
    git(&wt.path, &["checkout", "--quiet", "-B", "main", "refs/remotes/origin/main"]);
    std::fs::write(wt.path.join("evil.txt"), "x\n").unwrap();
    git(&wt.path, &["add", "."]);
    git(&wt.path, &["-c", "user.name=a", "-c", "user.email=a@x", "commit", "--quiet", "-m", "evil"]);
    let err =
        wt.check_contained(&wt.status("main").await.unwrap(), &base, "main", main_before.as_deref()).await.unwrap_err();
    assert!(err.to_string().contains("checked out refs/heads/main"), "{err}");
    wt.restore(&base, "main", main_before.as_deref()).await.unwrap();
    wt.check_contained(&wt.status("main").await.unwrap(), &base, "main", main_before.as_deref()).await.unwrap();
    assert!(!wt.path.join("evil.txt").exists());

    // Detaches HEAD, and rewrites history below the recorded base.
    git(&wt.path, &["checkout", "--quiet", "--detach"]);
    assert!(
        wt.check_contained(&wt.status("main").await.unwrap(), &base, "main", main_before.as_deref())
            .await
            .unwrap_err()
            .to_string()
            .contains("detached")
    );
    wt.restore(&base, "main", main_before.as_deref()).await.unwrap();
    std::fs::write(wt.path.join("f.txt"), "1\n").unwrap();
    let c1 = wt.commit_all(&msg(1), &Author::default()).await.unwrap().unwrap();
    git(&wt.path, &["reset", "--quiet", "--hard", &format!("{c1}~1")]);
    std::fs::write(wt.path.join("g.txt"), "2\n").unwrap();
    wt.commit_all(&msg(2), &Author::default()).await.unwrap();
    assert!(
        wt.check_contained(&wt.status("main").await.unwrap(), &c1, "main", main_before.as_deref())
            .await
            .unwrap_err()
            .to_string()
            .contains("rewrote")
    );
}

/// One `git status` tells after_run all it needs when the agent changed nothing,
/// so what it calls "changed" must be exactly what `git add --all` would stage.
#[tokio::test]
async fn status_reports_branch_head_and_what_add_all_would_stage() {
    let w = World::new();
    w.repo.ensure().await.unwrap();
    let branch = "feature/SHOP-1-bug-s";
    let wt = w.repo.worktree(&w.wt("SHOP-1"), branch, None).await.unwrap();
    let head = wt.head().await.unwrap();
    let clean = wt.status("main").await.unwrap();
    let main = wt.local_branch_sha("main").await.unwrap();
    assert_eq!(
        clean,
        orch_vcs::Status { branch: Some(branch.to_owned()), head: Some(head.clone()), changed: false, main }
    );

    // Ignored files and empty directories are not changes; add --all stages neither.
    std::fs::create_dir(wt.path.join("empty")).unwrap();
    std::fs::write(wt.path.join(".gitignore"), "target/\n").unwrap();
    git(&wt.path, &["add", ".gitignore"]);
    git(&wt.path, &["-c", "user.name=a", "-c", "user.email=a@x", "commit", "--quiet", "-m", "ignore"]);
    std::fs::create_dir(wt.path.join("target")).unwrap();
    std::fs::write(wt.path.join("target/out.bin"), "x").unwrap();
    assert!(!wt.status("main").await.unwrap().changed, "only ignored files and an empty directory");
    assert_eq!(wt.commit_all(&msg(1), &Author::default()).await.unwrap(), None);

    // An untracked file, a modified one, a deleted one: each is a change.
    let tracked = git(&wt.path, &["ls-files"]);
    let first = tracked.lines().find(|f| *f != ".gitignore").unwrap().to_owned();
    for change in ["untracked", "modified", "deleted"] {
        match change {
            "untracked" => std::fs::write(wt.path.join("new.txt"), "n\n").unwrap(),
            "modified" => std::fs::write(wt.path.join(&first), "changed\n").unwrap(),
            _ => std::fs::remove_file(wt.path.join(&first)).unwrap(),
        }
        assert!(wt.status("main").await.unwrap().changed, "{change}");
        assert!(wt.commit_all(&msg(2), &Author::default()).await.unwrap().is_some(), "{change}");
        assert!(!wt.status("main").await.unwrap().changed, "{change}: clean after the commit");
    }

    // The repository's config is the agent's to write: hiding untracked files
    // there must not hide them from orch.
    git(&wt.path, &["config", "status.showUntrackedFiles", "no"]);
    std::fs::write(wt.path.join("hidden.txt"), "h\n").unwrap();
    assert!(wt.status("main").await.unwrap().changed, "showUntrackedFiles=no in the config");
    assert!(wt.commit_all(&msg(3), &Author::default()).await.unwrap().is_some());

    git(&wt.path, &["checkout", "--quiet", "--detach"]);
    assert_eq!(wt.status("main").await.unwrap().branch, None);
}

/// The quick check of a worktree reused between stages (no git call) accepts what
/// git wrote and refuses what an agent, in this worktree or another one sharing
/// the mirror, could have changed.
#[tokio::test]
async fn a_worktree_is_taken_as_settled_only_as_git_left_it() {
    let w = World::new();
    w.repo.ensure().await.unwrap();
    let branch = "feature/SHOP-1-bug-l";
    let wt = w.repo.worktree(&w.wt("SHOP-1"), branch, None).await.unwrap();
    let base = wt.head().await.unwrap();
    assert!(w.repo.worktree_is_at(&wt.path, branch, &base));
    assert!(!w.repo.worktree_is_at(&wt.path, branch, "0000000000000000000000000000000000000000"), "another commit");
    assert!(!w.repo.worktree_is_at(&wt.path, "feature/other", &base), "another branch");
    let dot_git = wt.path.join(".git");
    let original = std::fs::read_to_string(&dot_git).unwrap();

    // A pointer to another repository's worktree folder.
    let elsewhere = w.wt("elsewhere");
    std::fs::create_dir_all(elsewhere.join("worktrees/x")).unwrap();
    std::fs::write(&dot_git, format!("gitdir: {}\n", elsewhere.join("worktrees/x").display())).unwrap();
    assert!(!w.repo.worktree_is_at(&wt.path, branch, &base), "points outside the mirror");
    // A link to the original file, and a repository of the agent's own.
    std::fs::remove_file(&dot_git).unwrap();
    let copy = w.wt("dot-git-copy");
    std::fs::write(&copy, &original).unwrap();
    std::os::unix::fs::symlink(&copy, &dot_git).unwrap();
    assert!(!w.repo.worktree_is_at(&wt.path, branch, &base), "a symlink");
    std::fs::remove_file(&dot_git).unwrap();
    git(&wt.path, &["init", "--quiet"]);
    assert!(!w.repo.worktree_is_at(&wt.path, branch, &base), "a repository of its own");
    std::fs::remove_dir_all(&dot_git).unwrap();
    std::fs::write(&dot_git, &original).unwrap();
    assert!(w.repo.worktree_is_at(&wt.path, branch, &base), "restored");

    // Another item's worktree shares the mirror: moving this branch from there,
    // or switching this worktree's HEAD, is seen.
    let other = w.repo.worktree(&w.wt("SHOP-2"), "feature/SHOP-2-bug-o", None).await.unwrap();
    std::fs::write(other.path.join("x.txt"), "x\n").unwrap();
    let moved = other.commit_all(&msg(7), &Author::default()).await.unwrap().unwrap();
    let r = format!("refs/heads/{branch}");
    git(&other.path, &["update-ref", &r, &moved]);
    assert!(!w.repo.worktree_is_at(&wt.path, branch, &base), "the branch was moved");
    git(&other.path, &["update-ref", &r, &base]);
    assert!(w.repo.worktree_is_at(&wt.path, branch, &base), "moved back");
    git(&wt.path, &["checkout", "--quiet", "-b", "feature/elsewhere"]);
    assert!(!w.repo.worktree_is_at(&wt.path, branch, &base), "HEAD on another branch");
}

/// A replace ref planted in the shared mirror must not change what orch's git
/// sees under a commit id.
#[tokio::test]
async fn replace_refs_an_agent_plants_are_not_followed() {
    let w = World::new();
    w.repo.ensure().await.unwrap();
    let wt = w.repo.worktree(&w.wt("SHOP-1"), "feature/SHOP-1-bug-r", None).await.unwrap();
    std::fs::write(wt.path.join("a.txt"), "a\n").unwrap();
    let real = wt.commit_all(&msg(1), &Author::default()).await.unwrap().unwrap();
    std::fs::write(wt.path.join("b.txt"), "b\n").unwrap();
    let fake = wt.commit_all(&msg(2), &Author::default()).await.unwrap().unwrap();
    git(&wt.path, &["replace", &real, &fake]);
    let plain = git(&wt.path, &["log", "-1", "--format=%(trailers:key=Orch-Job,valueonly)", &real]);
    assert_eq!(plain.trim(), "2", "plain git follows the replace ref");
    let ours = Git::default()
        .run(&wt.path, &["log", "-1", "--format=%(trailers:key=Orch-Job,valueonly)", &real])
        .await
        .unwrap();
    assert_eq!(ours.trim(), "1", "orch's git does not");
}

/// An agent that stays on its branch but moves the repository's local main is
/// caught by the main check, not only by the branch check.
#[tokio::test]
async fn an_agent_that_moves_main_from_its_branch_is_caught() {
    let w = World::new();
    w.repo.ensure().await.unwrap();
    let wt = w.repo.worktree(&w.wt("SHOP-1"), "feature/SHOP-1-bug-m", None).await.unwrap();
    let base = wt.head().await.unwrap();
    let main_before = wt.local_branch_sha("main").await.unwrap();
    std::fs::write(wt.path.join("f.txt"), "1\n").unwrap();
    let c1 = wt.commit_all(&msg(1), &Author::default()).await.unwrap().unwrap();
    git(&wt.path, &["branch", "--quiet", "--force", "main", &c1]);
    let err =
        wt.check_contained(&wt.status("main").await.unwrap(), &base, "main", main_before.as_deref()).await.unwrap_err();
    assert!(err.to_string().contains("committed on main"), "{err}");
}

#[tokio::test]
async fn a_second_node_continues_from_the_recorded_sha() {
    let w = World::new();
    w.repo.ensure().await.unwrap();
    let branch = "feature/SHOP-1-bug-z";
    let a = w.repo.worktree(&w.wt("SHOP-1"), branch, None).await.unwrap();
    std::fs::write(a.path.join("a.txt"), "from node A\n").unwrap();
    let ca = a.commit_all(&msg(1), &Author::default()).await.unwrap().unwrap();
    a.push_fenced(None).await.unwrap();

    // Node B: its own mirror and data folder, never saw the branch.
    let spec = RepoSpec { name: "shop".into(), remote: w.remote.display().to_string(), main_branch: "main".into() };
    let b_repo = Repo::new(Git::default(), spec, w.dir.path().join("data-b/repos/shop.git"));
    b_repo.ensure().await.unwrap();
    let b = b_repo.worktree(&w.dir.path().join("data-b/work/SHOP-1"), branch, Some(&ca)).await.unwrap();
    assert_eq!(b.head().await.unwrap(), ca);
    assert_eq!(std::fs::read_to_string(b.path.join("a.txt")).unwrap(), "from node A\n");
    std::fs::write(b.path.join("b.txt"), "from node B\n").unwrap();
    let cb = b.commit_all(&msg(2), &Author::default()).await.unwrap().unwrap();
    b.push_fenced(Some(&ca)).await.unwrap();
    assert_eq!(w.remote_sha(branch).as_deref(), Some(cb.as_str()));

    // A reused worktree on node A is put back where the store says.
    let a2 = w.repo.worktree(&w.wt("SHOP-1"), branch, Some(&cb)).await.unwrap();
    assert_eq!(a2.head().await.unwrap(), cb);
    let missing = w
        .repo
        .worktree(&w.wt("SHOP-9"), "feature/SHOP-9-bug-q", Some("0123456789012345678901234567890123456789"))
        .await;
    assert!(matches!(missing, Err(Error::UnknownCommit { .. })), "{missing:?}");
}

#[tokio::test]
async fn the_remote_is_found_from_a_clone_and_bad_paths_are_named() {
    let w = World::new();
    let g = Git::default();
    let found = orch_vcs::resolve_remote(&g, "shop", Some(&w.user), None).await.unwrap();
    assert_eq!(std::fs::canonicalize(&found).unwrap(), std::fs::canonicalize(&w.remote).unwrap());
    let url = orch_vcs::resolve_remote(&g, "shop", Some(&w.user), Some("https://example.invalid/x.git")).await.unwrap();
    assert_eq!(url, "https://example.invalid/x.git");
    let plain = w.dir.path().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    let err = orch_vcs::resolve_remote(&g, "shop", Some(&plain), None).await.unwrap_err();
    assert!(err.to_string().starts_with("repo shop: ") && err.to_string().contains("is not a git repository"), "{err}");
    git(&plain, &["init", "--quiet"]);
    let err = orch_vcs::resolve_remote(&g, "shop", Some(&plain), None).await.unwrap_err();
    assert!(matches!(err, Error::NoRemote { .. }), "{err}");
    let spec = RepoSpec {
        name: "shop".into(),
        remote: w.dir.path().join("nowhere.git").display().to_string(),
        main_branch: "main".into(),
    };
    let unreachable = Repo::new(Git::default(), spec, w.dir.path().join("m.git")).ensure().await.unwrap_err();
    assert!(unreachable.to_string().contains("nowhere.git"), "{unreachable}");
    let spec = RepoSpec { name: "shop".into(), remote: w.remote.display().to_string(), main_branch: "trunk".into() };
    let no_main = Repo::new(Git::default(), spec, w.dir.path().join("m2.git")).ensure().await.unwrap_err();
    assert!(matches!(no_main, Error::NoMainBranch { .. }), "{no_main}");
}

#[tokio::test]
async fn a_merge_preview_checks_out_what_will_land_or_names_the_conflict() {
    let w = World::new();
    w.repo.ensure().await.unwrap();
    let a = w.repo.worktree(&w.wt("SHOP-1"), "feature/SHOP-1-bug-a", None).await.unwrap();
    std::fs::write(a.path.join("app.txt"), "line 1\nA\nline 3\n").unwrap();
    let ca = a.commit_all(&msg(1), &Author::default()).await.unwrap().unwrap();
    a.push_fenced(None).await.unwrap();
    // Main moves on with a file the branch never saw.
    let b = w.repo.worktree(&w.wt("SHOP-2"), "feature/SHOP-2-bug-b", None).await.unwrap();
    std::fs::write(b.path.join("new.txt"), "on main\n").unwrap();
    let cb = b.commit_all(&msg(2), &Author::default()).await.unwrap().unwrap();
    b.push_fenced(None).await.unwrap();
    // SHOP-3 branches before SHOP-2 lands and adds the same file differently.
    let c = w.repo.worktree(&w.wt("SHOP-3"), "feature/SHOP-3-bug-c", None).await.unwrap();
    std::fs::write(c.path.join("new.txt"), "conflicting\n").unwrap();
    let cc = c.commit_all(&msg(3), &Author::default()).await.unwrap().unwrap();
    let scratch = w.dir.path().join("data/merge");
    w.repo.merge_into_main(&cb, "Merge SHOP-2: b\n", &Author::default(), &scratch).await.unwrap();

    let preview = w.dir.path().join("data/preview");
    let orch_vcs::Preview::Ready(p) = w.repo.merge_preview(&ca, &preview, &Author::default()).await.unwrap() else {
        panic!("expected a clean preview")
    };
    assert_eq!(std::fs::read_to_string(p.join("app.txt")).unwrap(), "line 1\nA\nline 3\n");
    assert_eq!(std::fs::read_to_string(p.join("new.txt")).unwrap(), "on main\n", "main's changes are in the preview");
    w.repo.remove_worktree(&p).await.unwrap();
    let conflict = w.repo.merge_preview(&cc, &preview, &Author::default()).await.unwrap();
    assert!(
        matches!(&conflict, orch_vcs::Preview::Conflict(paths) if paths == &["new.txt".to_owned()]),
        "{conflict:?}"
    );
    assert!(!preview.exists());
}

/// An agent shares the mirror's config and hooks with the node. Nothing it plants
/// there runs as the node or redirects the node's pushes.
#[tokio::test]
async fn hooks_and_remote_settings_an_agent_plants_do_not_act_for_the_node() {
    let w = World::new();
    w.repo.ensure().await.unwrap();
    let branch = "feature/SHOP-1-bug-hostile";
    let wt = w.repo.worktree(&w.wt("SHOP-1"), branch, None).await.unwrap();
    let fired = w.dir.path().join("fired");
    let hooks = w.dir.path().join("evil-hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    for hook in ["post-commit", "pre-push", "prepare-commit-msg", "reference-transaction", "post-checkout"] {
        let body = format!("#!/bin/sh\necho {hook} >> {}\n", fired.display());
        std::fs::write(hooks.join(hook), body).unwrap();
        std::fs::set_permissions(hooks.join(hook), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let elsewhere = w.dir.path().join("elsewhere.git");
    git(w.dir.path(), &["init", "--quiet", "--bare", elsewhere.to_str().unwrap()]);
    // What a hostile agent can run in its worktree: it writes the mirror's config.
    git(&wt.path, &["config", "core.hooksPath", hooks.to_str().unwrap()]);
    git(&wt.path, &["config", "remote.origin.pushurl", elsewhere.to_str().unwrap()]);
    git(&wt.path, &["config", "remote.origin.url", elsewhere.to_str().unwrap()]);

    std::fs::write(wt.path.join("f.txt"), "work\n").unwrap();
    let sha = wt.commit_all(&msg(1), &Author::default()).await.unwrap().unwrap();
    wt.push_fenced(None).await.unwrap();
    w.repo.fetch().await.unwrap();
    let scratch = w.dir.path().join("data/merge");
    w.repo.merge_into_main(&sha, "Merge SHOP-1: x\n", &Author::default(), &scratch).await.unwrap();
    assert!(!fired.exists(), "a planted hook ran: {}", std::fs::read_to_string(&fired).unwrap_or_default());
    assert_eq!(w.remote_sha(branch).as_deref(), Some(sha.as_str()), "the push reached the configured remote");
    assert_eq!(git(&w.remote, &["log", "-1", "--format=%s", "main"]), "Merge SHOP-1: x");
    let stray = Command::new("git")
        .args(["rev-parse", "--verify", "--quiet", "refs/heads/main"])
        .current_dir(&elsewhere)
        .output()
        .unwrap();
    assert!(!stray.status.success(), "nothing went to the agent's remote");
}

/// A worktree whose `.git` the agent replaced is rebuilt, never worked in; and a
/// trailer in old history cannot pass for a later job's commit.
#[tokio::test]
async fn a_replaced_dot_git_is_rebuilt_and_old_trailers_do_not_count() {
    let w = World::new();
    w.repo.ensure().await.unwrap();
    let branch = "feature/SHOP-1-bug-dotgit";
    let wt = w.repo.worktree(&w.wt("SHOP-1"), branch, None).await.unwrap();
    std::fs::write(wt.path.join("a.txt"), "a\n").unwrap();
    // The agent forges a trailer for a later job into its own commit message.
    let forged = "developer(SHOP-1): work\n\nRefs: SHOP-1\nOrch-Job: 1\nOrch-Job: 7\n";
    let c1 = wt.commit_all(forged, &Author::default()).await.unwrap().unwrap();
    wt.push_fenced(None).await.unwrap();
    w.repo.fetch().await.unwrap();
    assert_eq!(w.repo.find_job_commit(branch, 7, None).await.unwrap().as_deref(), Some(c1.as_str()));
    assert_eq!(w.repo.find_job_commit(branch, 7, Some(&c1)).await.unwrap(), None, "only after what the store holds");

    let decoy = w.dir.path().join("decoy");
    git(w.dir.path(), &["init", "--quiet", decoy.to_str().unwrap()]);
    std::fs::remove_file(wt.path.join(".git")).unwrap();
    std::fs::write(wt.path.join(".git"), format!("gitdir: {}/.git\n", decoy.display())).unwrap();
    let again = w.repo.worktree(&w.wt("SHOP-1"), branch, Some(&c1)).await.unwrap();
    assert_eq!(again.head().await.unwrap(), c1, "rebuilt from the mirror at the recorded commit");
    assert!(std::fs::symlink_metadata(again.path.join(".git")).unwrap().is_file());
}
