//! The pipeline on real git: a bare remote whose `pre-receive` hook lets main
//! change only by an item's merge commit, a user's folder that is a clone of it,
//! and `orch serve` doing the work — feature branches, auto-commits with
//! trailers, fenced pushes, a pull request per item, the merge in deploy.

mod common;

use common::deployment::{Deployment, FAST, PASS, sqlite, terminate};
use common::wait_until;
use orch_test_support::{PRE_RECEIVE_ONLY_ITEM_MERGES, git_out, install_hook, remote_sha};

fn pr(dep: &Deployment, key: &str) -> serde_json::Value {
    let out = dep.orch(&["pr", "show", key, "--json"]);
    assert!(out.status.success(), "pr show: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Agents that change the tree: the developer writes `src/<KEY>.txt`, the tester
/// a test next to it; the deployer records what main was when it ran.
fn working_agents(dep: &Deployment) {
    dep.script(
        "agents/developer.sh",
        &format!("mkdir -p src\necho \"fix for $ORCH_ITEM\" > src/$ORCH_ITEM.txt\n{PASS}"),
    );
    dep.script(
        "agents/tester.sh",
        &format!("mkdir -p tests\necho \"test of $ORCH_ITEM\" > tests/$ORCH_ITEM.txt\n{PASS}"),
    );
    let remote = dep.remote.display().to_string();
    let out = dep.path().display().to_string();
    dep.script(
        "agents/deployer.sh",
        &format!("git -C {remote} rev-parse main > {out}/main-at-deploy-$ORCH_ITEM\n{PASS}"),
    );
}

#[test]
fn quick_track_commits_on_a_feature_branch_opens_a_pr_and_merges_main_only_in_deploy() {
    let dep = Deployment::new(sqlite(), FAST, "");
    install_hook(&dep.remote, "pre-receive", PRE_RECEIVE_ONLY_ITEM_MERGES);
    working_agents(&dep);
    let main_before = remote_sha(&dep.remote, "main").unwrap();
    let out = dep.orch(&["check"]);
    assert!(out.status.success(), "check: {}", String::from_utf8_lossy(&out.stderr));

    let mut node = dep.serve("node-a", "data-a", &[], "serve.log");
    let key = dep.add_item("Fix the checkout");
    wait_until("the item to finish", || dep.status(&key) == "done");
    let worktree = dep.path().join("data-a/work").join(&key);
    wait_until("the done item's worktree to be removed", || !worktree.exists());
    assert!(terminate(&mut node).success(), "{}", dep.log("serve.log"));

    let item = dep.item(&key);
    let branch = format!("feature/{key}-bug-fix-the-checkout");
    assert_eq!(item["branch"], branch.as_str());
    let head = remote_sha(&dep.remote, &branch).expect("the branch was pushed");
    assert_eq!(item["head_sha"], head.as_str());
    // One commit per run that changed the tree, with the message and trailers.
    let log = git_out(
        &dep.remote,
        &[
            "log",
            "--format=%s|%(trailers:key=Refs,valueonly,separator=%x2C)|%(trailers:key=Orch-Job,valueonly,separator=%x2C)",
            &format!("{main_before}..{branch}"),
        ],
    );
    let commits: Vec<&str> = log.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(commits.len(), 2, "developer and tester changed the tree, deployer did not: {commits:?}");
    assert!(commits[1].starts_with(&format!("developer({key}): auto-commit from developer job ")), "{commits:?}");
    assert!(commits[0].starts_with(&format!("tester({key}): auto-commit from tester job ")), "{commits:?}");
    assert!(commits.iter().all(|c| c.contains(&format!("|{key}|"))), "Refs trailer: {commits:?}");
    // Main did not move until deploy; then it holds the merge.
    let at_deploy = std::fs::read_to_string(dep.path().join(format!("main-at-deploy-{key}"))).unwrap();
    assert_eq!(at_deploy.trim(), main_before, "main unchanged until the deploy stage");
    let main_after = remote_sha(&dep.remote, "main").unwrap();
    assert_eq!(git_out(&dep.remote, &["log", "-1", "--format=%s", "main"]), format!("Merge {key}: Fix the checkout"));
    assert!(git_out(&dep.remote, &["log", "-1", "--format=%(trailers)", "main"]).contains(&format!("Refs: {key}")));
    assert_eq!(git_out(&dep.remote, &["rev-parse", "main^2"]), head, "the merge's second parent is the item's head");
    let pr = pr(&dep, &key);
    assert_eq!((pr["state"].as_str(), pr["merge_sha"].as_str()), (Some("merged"), Some(main_after.as_str())));
    assert_eq!(pr["title"], format!("{key}: Fix the checkout"));
    let kinds: Vec<String> = dep.events(&key).iter().map(|e| e["kind"].as_str().unwrap().to_owned()).collect();
    for k in ["vcs.committed", "vcs.pushed", "pr.opened", "pr.merged", "item.done"] {
        assert!(kinds.iter().any(|x| x == k), "missing {k}: {kinds:?}");
    }

    dep.assert_audit_clean();
}

#[test]
fn two_items_at_once_and_a_merge_conflict_goes_back_to_development_then_lands() {
    let dep = Deployment::new(sqlite(), FAST, "");
    install_hook(&dep.remote, "pre-receive", PRE_RECEIVE_ONLY_ITEM_MERGES);
    // Both items edit the same file. On a later development attempt the agent
    // takes main's side of the conflict by merging main into its branch.
    dep.script(
        "agents/developer.sh",
        &format!(
            "if [ \"$ORCH_ATTEMPT\" -gt 1 ]; then git -c user.name=a -c user.email=a@x merge -q -X theirs refs/remotes/origin/main -m 'take main'; fi\n\
             echo \"$ORCH_ITEM was here\" > shared.txt\n{PASS}"
        ),
    );
    let mut node = dep.serve("node-a", "data-a", &[], "serve.log");
    let first = dep.add_item("first");
    let second = dep.add_item("second");
    wait_until("both items to finish", || dep.status(&first) == "done" && dep.status(&second) == "done");
    assert!(terminate(&mut node).success(), "{}", dep.log("serve.log"));
    let rollbacks: Vec<serde_json::Value> =
        [&first, &second].iter().flat_map(|k| dep.events(k)).filter(|e| e["kind"] == "item.rolled_back").collect();
    assert_eq!(rollbacks.len(), 1, "exactly one item conflicted: {rollbacks:?}");
    let r = &rollbacks[0];
    assert_eq!((r["from"].as_str(), r["to"].as_str()), (Some("deploy"), Some("development")));
    assert!(
        r["reason"].as_str().unwrap().contains("merge conflict")
            && r["reason"].as_str().unwrap().contains("shared.txt"),
        "{r}"
    );
    let merges = git_out(&dep.remote, &["log", "--first-parent", "--format=%s", "main"]);
    assert_eq!(merges.lines().filter(|l| l.starts_with("Merge ")).count(), 2, "{merges}");
    dep.assert_audit_clean();
}

#[test]
fn an_agent_that_commits_on_main_fails_its_job_and_the_branch_is_restored() {
    let dep = Deployment::new(sqlite(), FAST, "");
    let main_before = remote_sha(&dep.remote, "main").unwrap();
    // First run: commits on main in its worktree. Later runs behave.
    dep.script(
        "agents/developer.sh",
        &format!(
            "if [ \"$ORCH_ATTEMPT\" = 1 ]; then git checkout -q -B main refs/remotes/origin/main; echo evil > evil.txt; \
             git add evil.txt; git -c user.name=a -c user.email=a@x commit -qm evil; fi\n{PASS}"
        ),
    );
    let mut node = dep.serve("node-a", "data-a", &[], "serve.log");
    let key = dep.add_item("sneaky");
    wait_until("the item to finish", || dep.status(&key) == "done");
    assert!(terminate(&mut node).success());
    let events = dep.events(&key);
    let failed = events.iter().find(|e| e["kind"] == "job.failed").expect("the first run failed");
    assert!(failed["reason"].as_str().unwrap().contains("agent left its branch"), "{failed}");
    let on_main = git_out(&dep.remote, &["log", "--format=%s", &format!("{main_before}..main")]);
    assert!(!on_main.lines().any(|l| l == "evil"), "the evil commit never reached main: {on_main}");
    let branch = dep.item(&key)["branch"].as_str().map(str::to_owned);
    if let Some(h) = branch.and_then(|b| remote_sha(&dep.remote, &b)) {
        let on_branch = git_out(&dep.remote, &["log", "--format=%s", &h]);
        assert!(!on_branch.lines().any(|l| l == "evil"), "nor the item branch: {on_branch}");
    }
    dep.assert_audit_clean();
}

#[test]
fn a_repo_that_is_not_a_git_repository_is_named_and_other_repos_keep_working() {
    let extra = "[[repos]]\nname = \"broken\"\nkey = \"BRK\"\npath = \"not-a-repo\"\n";
    let dep = Deployment::new(sqlite(), FAST, extra);
    std::fs::create_dir_all(dep.path().join("not-a-repo")).unwrap();
    let out = dep.orch(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("repo broken:") && err.contains("not a git repository"), "{err}");

    let mut node = dep.serve("node-a", "data-a", &[], "serve.log");
    let good = dep.add_item("works");
    let out = dep.orch(&["item", "add", "--repo", "broken", "--kind", "bug", "--title", "stuck", "--json"]);
    assert!(out.status.success());
    let bad: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let bad = bad["key"].as_str().unwrap().to_owned();
    wait_until("the good item to finish and the bad one to stop", || {
        dep.status(&good) == "done" && dep.status(&bad) == "blocked"
    });
    assert!(terminate(&mut node).success());
    let events = dep.events(&bad);
    assert!(
        events.iter().any(|e| e["reason"]
            .as_str()
            .is_some_and(|r| r.contains("repo broken") && r.contains("not a git repository"))),
        "the reason names the repo and the problem: {events:?}"
    );
    assert!(
        !events.iter().any(|e| e["kind"] == "item.rolled_back" && e["from"] != e["to"]),
        "never rolled back along on_fail"
    );
}

#[test]
fn a_crash_between_push_and_store_record_neither_duplicates_the_commit_nor_merges_twice() {
    let dep = Deployment::new(sqlite(), FAST, "");
    install_hook(&dep.remote, "pre-receive", PRE_RECEIVE_ONLY_ITEM_MERGES);
    working_agents(&dep);
    // The first push of a feature branch kills the node right after the remote
    // accepted it: the push landed, the store never heard of it.
    let pidfile = dep.path().join("pids/node");
    install_hook(
        &dep.remote,
        "post-receive",
        &format!(
            "#!/bin/sh\nwhile read old new ref; do case \"$ref\" in refs/heads/feature/*) \
             if [ ! -f {p}.done ]; then touch {p}.done; kill -9 $(cat {p}); fi;; esac; done\n",
            p = pidfile.display()
        ),
    );
    let main_before = remote_sha(&dep.remote, "main").unwrap();
    let mut first = dep.serve("node-a", "data-a", &[], "serve-1.log");
    std::fs::write(&pidfile, first.0.id().to_string()).unwrap();
    let key = dep.add_item("crash after push");
    wait_until("the node to die in its first push", || first.0.try_wait().unwrap().is_some());
    let branch = dep.item(&key)["branch"].as_str().map(str::to_owned);
    assert!(dep.item(&key)["head_sha"].is_null(), "the store never recorded the push: {branch:?}");

    let mut second = dep.serve("node-a", "data-a", &[], "serve-2.log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while dep.status(&key) != "done" {
        assert!(
            std::time::Instant::now() < deadline,
            "the item did not finish after the restart: {:#?}\n{}",
            dep.events(&key),
            dep.log("serve-2.log")
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(terminate(&mut second).success(), "{}", dep.log("serve-2.log"));
    let branch = dep.item(&key)["branch"].as_str().unwrap().to_owned();
    let subjects = git_out(&dep.remote, &["log", "--format=%s", &format!("{main_before}..{branch}")]);
    let dev_commits = subjects.lines().filter(|l| l.starts_with(&format!("developer({key})"))).count();
    assert_eq!(dev_commits, 1, "the developer's work was committed once: {subjects}");
    let events = dep.events(&key);
    assert!(
        events.iter().any(|e| e["kind"] == "vcs.pushed" && e["data"]["adopted"] == true),
        "the pushed commit was adopted"
    );
    let merges = git_out(&dep.remote, &["log", "--first-parent", "--format=%s", "main"]);
    assert_eq!(merges.lines().filter(|l| l.starts_with(&format!("Merge {key}:"))).count(), 1, "{merges}");
    dep.assert_audit_clean();
}

#[test]
fn cancel_closes_the_pull_request_and_escalation_keeps_branch_and_pr() {
    let dep = Deployment::new(sqlite(), FAST, "");
    let release = dep.path().join("release");
    dep.script("agents/developer.sh", &format!("echo \"work of $ORCH_ITEM\" > $ORCH_ITEM.txt\n{PASS}"));
    dep.script("agents/tester.sh", &format!("while [ ! -f {} ]; do sleep 0.02; done\n{PASS}", release.display()));
    let mut node = dep.serve("node-a", "data-a", &[], "serve.log");
    let cancelled = dep.add_item("to be cancelled");
    let escalated = dep.add_item("to be escalated");
    wait_until("both items to reach testing with a PR", || {
        [&cancelled, &escalated].iter().all(|k| dep.item(k)["stage"] == "testing" && !dep.item(k)["pr"].is_null())
    });
    let branch_before = dep.item(&escalated)["branch"].clone();
    assert!(dep.orch(&["item", "cancel", &cancelled]).status.success());
    assert!(dep.orch(&["item", "escalate", &escalated]).status.success());
    wait_until("the cancelled item's PR to close", || pr(&dep, &cancelled)["state"] == "closed");
    let esc = dep.item(&escalated);
    assert_eq!(esc["track"], "full-cycle");
    assert_eq!(esc["branch"], branch_before, "escalation keeps the branch");
    assert_eq!(pr(&dep, &escalated)["state"], "open", "and the pull request");
    std::fs::write(&release, "").unwrap();
    assert!(terminate(&mut node).success(), "{}", dep.log("serve.log"));
    let list = dep.orch(&["pr", "list", "--state", "closed", "--json"]);
    let closed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(closed.as_array().map(Vec::len), Some(1), "{closed}");
    dep.assert_audit_clean();
}

/// Two nodes on PostgreSQL with separate data folders: node A runs development and
/// dies in testing; node B takes the item over and tests the commit A pushed.
#[test]
fn a_second_node_on_postgres_tests_the_commit_the_first_node_pushed() {
    let db = orch_test_support::PgDatabase::create("orch_git_nodes");
    let reaper = "interval_s = 0.2\nfinalize_grace_s = 1\nmax_running_s = 120\nlease_ttl_s = 1\nheartbeat_s = 0.1\n";
    let dep = Deployment::new(db.url(), reaper, "");
    let seen = dep.path().join("tester-saw");
    dep.script("agents/developer.sh", &format!("echo \"from node A\" > feature.txt\n{PASS}"));
    // On node A the tester kills its node; on node B it records what it sees.
    dep.script(
        "agents/tester.sh",
        &format!(
            "case \"$ORCH_WORKTREE\" in */data-a/*) kill -9 $PPID; sleep 30;; esac\n\
             cat feature.txt > {seen}; git rev-parse HEAD >> {seen}\n{PASS}",
            seen = seen.display()
        ),
    );
    let mut a = dep.serve("node-a", "data-a", &[], "serve-a.log");
    let key = dep.add_item("two nodes");
    wait_until("node A to die in testing", || a.0.try_wait().unwrap().is_some());
    let pushed = dep.item(&key)["head_sha"].as_str().expect("node A pushed the development commit").to_owned();
    let mut b = dep.serve("node-b", "data-b", &[], "serve-b.log");
    wait_until("node B to finish the item", || dep.status(&key) == "done");
    assert!(terminate(&mut b).success(), "{}", dep.log("serve-b.log"));
    let saw = std::fs::read_to_string(&seen).unwrap();
    assert_eq!(saw.lines().collect::<Vec<_>>(), ["from node A", pushed.as_str()], "B tested A's commit");
    assert!(dep.path().join("data-b/repos/shop.git").exists(), "node B has its own mirror");
    dep.assert_audit_clean();
}

/// A gate with `on = "merge-preview"` checks what will land: the branch merged
/// with a main that moved after the branch was cut, not the branch alone.
#[test]
fn a_merge_preview_gate_sees_main_as_it_is_now() {
    let edge = "[[edges]]\nfrom = \"development\"\nto = \"testing\"\ngates = [\"preview\", \"branch-only\"]\non_fail = \"development\"\n\
                [gates.preview]\ncommand = [\"sh\", \"-c\", \"test -f moved-on-main.txt && test -f feature.txt\"]\non = \"merge-preview\"\ntimeout_s = 20\n\
                [gates.branch-only]\ncommand = [\"sh\", \"-c\", \"test ! -f moved-on-main.txt && test -f feature.txt\"]\ntimeout_s = 20\n";
    let dep = Deployment::new(sqlite(), FAST, edge);
    // The developer does its work, and meanwhile someone lands a change on main.
    let user = dep.path().display().to_string();
    dep.script(
        "agents/developer.sh",
        &format!(
            "echo feature > feature.txt\n\
             tmp=$(mktemp -d) && git clone -q {user}/remote.git $tmp && echo main > $tmp/moved-on-main.txt && \
             git -C $tmp add . && git -C $tmp -c user.name=u -c user.email=u@x commit -qm 'main moved' && git -C $tmp push -q origin main\n{PASS}"
        ),
    );
    let mut node = dep.serve("node-a", "data-a", &[], "serve.log");
    let key = dep.add_item("preview");
    wait_until("the item to finish", || dep.status(&key) == "done");
    assert!(terminate(&mut node).success(), "{}", dep.log("serve.log"));
    let gates: Vec<serde_json::Value> =
        dep.events(&key).into_iter().filter(|e| e["kind"].as_str().is_some_and(|k| k.starts_with("gate."))).collect();
    assert!(gates.len() >= 2 && gates.iter().all(|g| g["kind"] == "gate.passed"), "{gates:?}");
    let pr = pr(&dep, &key);
    assert_eq!(pr["checks"]["preview"]["passed"], true, "{pr}");
    assert_eq!(pr["checks"]["preview"]["sha"], pr["checks"]["branch-only"]["sha"], "checks name the branch SHA: {pr}");
}

/// A stale owner's push that lands on the item branch right behind orch's own
/// (here the remote itself adds it, before orch's push returns, so the store
/// records orch's commit and the branch is already past it) is never
/// overwritten: the next stage, which this node starts in the worktree the
/// last one left, has its push refused by git's lease, and the stage's retry
/// adopts the commit and lands on top of it.
#[test]
fn a_commit_pushed_behind_orchs_back_between_stages_is_adopted_not_overwritten() {
    let dep = Deployment::new(sqlite(), FAST, "");
    working_agents(&dep);
    let mark = dep.path().join("late-pushed");
    install_hook(
        &dep.remote,
        "post-receive",
        &format!(
            "#!/bin/sh\nwhile read old new ref; do case \"$ref\" in refs/heads/feature/*) \
             if [ ! -f {m} ]; then touch {m}; \
             key=$(git log -1 --format='%(trailers:key=Refs,valueonly)' \"$new\"); \
             late=$(printf 'late work\\n\\nRefs: %s\\nOrch-Job: 999999\\n' \"$key\" | \
             GIT_AUTHOR_NAME=stale GIT_AUTHOR_EMAIL=s@x GIT_COMMITTER_NAME=stale GIT_COMMITTER_EMAIL=s@x \
             git commit-tree \"$new^{{tree}}\" -p \"$new\"); \
             git update-ref \"$ref\" \"$late\" \"$new\"; fi;; esac; done\n",
            m = mark.display()
        ),
    );
    let mut node = dep.serve("node-a", "data-a", &[], "serve.log");
    let key = dep.add_item("late push");
    wait_until("the item to finish", || dep.status(&key) == "done");
    assert!(terminate(&mut node).success(), "{}", dep.log("serve.log"));
    assert!(mark.exists(), "the hook added the stale commit");
    let main_log = git_out(&dep.remote, &["log", "--format=%s", "main"]);
    let subjects: Vec<&str> = main_log.lines().collect();
    assert!(subjects.contains(&"late work"), "the stale commit was kept and merged: {subjects:?}");
    for role in ["developer", "tester"] {
        let n = subjects.iter().filter(|s| s.starts_with(&format!("{role}({key})"))).count();
        assert_eq!(n, 1, "one {role} commit: {subjects:?}");
    }
    assert_eq!(git_out(&dep.remote, &["show", &format!("main:tests/{key}.txt")]), format!("test of {key}"));
    let events = dep.events(&key);
    assert!(
        events.iter().any(|e| e["kind"] == "vcs.pushed" && e["data"]["adopted"] == true),
        "the stale commit was adopted: {events:#?}"
    );
    // The tester's first push met the moved branch and was refused, not forced.
    assert!(
        events.iter().any(|e| e["reason"].as_str().is_some_and(|r| r.contains("refused"))),
        "a push was refused by the lease: {events:#?}"
    );
    dep.assert_audit_clean();
}

/// Coding agents often commit by themselves: their commits are pushed and merged
/// like orch's own, not dropped because nothing was left to stage.
#[test]
fn an_agent_that_commits_by_itself_has_its_work_pushed_and_merged() {
    let dep = Deployment::new(sqlite(), FAST, "");
    dep.script(
        "agents/developer.sh",
        &format!("echo mine > mine.txt && git add mine.txt && git -c user.name=agent -c user.email=a@x commit -qm 'agent did this'\n{PASS}"),
    );
    let mut node = dep.serve("node-a", "data-a", &[], "serve.log");
    let key = dep.add_item("self committing");
    wait_until("the item to finish", || dep.status(&key) == "done");
    assert!(terminate(&mut node).success(), "{}", dep.log("serve.log"));
    assert_eq!(git_out(&dep.remote, &["show", "main:mine.txt"]), "mine", "the agent's commit reached main");
    assert!(git_out(&dep.remote, &["log", "--format=%s", "main"]).lines().any(|l| l == "agent did this"));
    dep.assert_audit_clean();
}

/// The node dies right after its merge reached main and before it recorded
/// `done`. The node that finishes the finalization sees the head in main and
/// records `done` without judging the work again: a gate that would now fail
/// (here: it refuses to run twice) must not roll a merged item back.
#[test]
fn a_crash_after_the_merge_finishes_the_item_without_running_its_gates_again() {
    let marker = "GATE_MARKER";
    let edge = "[[edges]]\nfrom = \"deploy\"\nto = \"done\"\ngates = [\"once\"]\non_fail = \"development\"\n\
                [gates.once]\ncommand = [\"sh\", \"-c\", \"test ! -f GATE_MARKER && touch GATE_MARKER\"]\ntimeout_s = 20\n";
    let dep = Deployment::new(sqlite(), FAST, "");
    let marker_path = dep.path().join("gate-ran-once");
    let text = std::fs::read_to_string(dep.path().join("orch.toml")).unwrap()
        + &edge.replace(marker, &marker_path.display().to_string());
    std::fs::write(dep.path().join("orch.toml"), text).unwrap();
    working_agents(&dep);
    let pidfile = dep.path().join("pids/node");
    install_hook(
        &dep.remote,
        "post-receive",
        &format!(
            "#!/bin/sh\nwhile read old new ref; do [ \"$ref\" = refs/heads/main ] && kill -9 $(cat {}); done\nexit 0\n",
            pidfile.display()
        ),
    );
    let mut first = dep.serve("node-a", "data-a", &[], "serve-1.log");
    std::fs::write(&pidfile, first.0.id().to_string()).unwrap();
    let key = dep.add_item("merge then crash");
    wait_until("the node to die right after its merge", || first.0.try_wait().unwrap().is_some());
    assert!(git_out(&dep.remote, &["log", "-1", "--format=%s", "main"]).starts_with(&format!("Merge {key}:")));
    assert_ne!(dep.status(&key), "done", "the store had not recorded done");
    std::fs::write(dep.remote.join("hooks/post-receive"), "#!/bin/sh\nexit 0\n").unwrap();

    let mut second = dep.serve("node-a", "data-a", &[], "serve-2.log");
    wait_until("the item to be recorded done", || dep.status(&key) == "done");
    assert!(terminate(&mut second).success(), "{}", dep.log("serve-2.log"));
    let events = dep.events(&key);
    assert!(!events.iter().any(|e| e["kind"] == "item.rolled_back"), "a merged item was rolled back: {events:?}");
    let merges = git_out(&dep.remote, &["log", "--first-parent", "--format=%s", "main"]);
    assert_eq!(merges.lines().filter(|l| l.starts_with(&format!("Merge {key}:"))).count(), 1, "{merges}");
    assert_eq!(pr(&dep, &key)["state"], "merged");
    dep.assert_audit_clean();
}
