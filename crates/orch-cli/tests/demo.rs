//! `orch demo`, run for real: the binary builds its workspace, runs its node and
//! agents, and must leave the store and the sample repository in the state the
//! demo promises — judged from the store and git, never from what it printed.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use common::ORCH;
use common::deployment::alive;
use orch_core::ItemKey;
use orch_store::{Event, Item};
use orch_test_support::git_out;

/// `orch demo ARGS` with stdout and stderr captured (so neither is a terminal).
fn demo(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(ORCH);
    cmd.arg("demo").args(args).env_remove("ORCH_CONFIG").env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Everything the store holds about one item.
struct Seen {
    item: Item,
    events: Vec<Event>,
}

impl Seen {
    fn of_kind(&self, kind: &str) -> Vec<&Event> {
        self.events.iter().filter(|e| e.kind == kind).collect()
    }
}

fn read_store(ws: &Path) -> (Vec<Seen>, orch_engine::audit::AuditReport) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = format!("sqlite://{}", ws.join(".orch/orch.db").display());
        let store = orch_store::open(&url).await.unwrap();
        let text = std::fs::read_to_string(ws.join("orch.toml")).unwrap();
        let config = orch_core::config::load(&ws.join("orch.toml"), &text, &Default::default()).unwrap();
        let mut seen = Vec::new();
        for n in 1..=3 {
            let key: ItemKey = format!("DEMO-{n}").parse().unwrap();
            let item = store.get_item(&key).await.unwrap().unwrap_or_else(|| panic!("{key} was filed"));
            let events = store.events_for_item(&key).await.unwrap();
            seen.push(Seen { item, events });
        }
        let all = store.list_items(&Default::default(), Default::default()).await.unwrap();
        assert_eq!(all.len(), 3, "the demo files exactly three items");
        let audit = orch_engine::audit::audit_store(&*store, &config).await.unwrap();
        (seen, audit)
    })
}

#[test]
fn demo_takes_every_item_to_its_expected_end_and_main_holds_only_their_merges() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    let out = demo(&["--keep", ws.to_str().unwrap()], &[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "orch demo failed:\n{stdout}\n{stderr}");
    assert!(!stdout.contains('\u{1b}') && !stderr.contains('\u{1b}'), "escape codes in non-tty output:\n{stdout}");

    let (seen, audit) = read_store(&ws);
    assert!(audit.is_clean(), "audit breaches: {:?}", audit.breaches);
    for s in &seen {
        assert_eq!(s.item.status.as_str(), "done", "{} ended {}", s.item.key, s.item.status);
        assert!(s.of_kind("reaper.took_over").is_empty(), "{}: no takeover in a healthy run", s.item.key);
    }
    let [rollback, feature, escalated] = &seen[..] else { unreachable!() };

    // DEMO-1: the re-test gate went red once, the item went back to development
    // once, and development's second attempt landed.
    let rolled = rollback.of_kind("item.rolled_back");
    assert_eq!(rolled.len(), 1, "exactly one rollback: {rolled:?}");
    assert_eq!((rolled[0].from.as_deref(), rolled[0].to.as_deref()), (Some("testing"), Some("development")));
    let red = rollback.of_kind("gate.failed");
    assert_eq!(red.len(), 1, "one red gate: {red:?}");
    assert_eq!(red[0].data["gate"], "retest");
    assert_eq!(rollback.item.attempts.get(&orch_core::StageName::new("development")), Some(&2));
    assert_eq!(rollback.item.track.as_str(), "quick");
    let gates: BTreeSet<&str> =
        rollback.of_kind("gate.passed").iter().filter_map(|e| e.data["gate"].as_str()).collect();
    for g in ["retest", "security", "merge-retest", "coverage"] {
        assert!(gates.contains(g), "deploy-staging's gate {g} passed: {gates:?}");
    }

    // DEMO-2: the slow design review made the reaper defer to the live finalizer;
    // nothing was taken over or rolled back.
    assert!(!feature.of_kind("reaper.deferred").is_empty(), "the reaper deferred on the slow gate");
    assert!(feature.of_kind("item.rolled_back").is_empty(), "no rollback on the deferred item");
    assert_eq!(feature.item.track.as_str(), "full-cycle");

    // DEMO-3: its developer's verdict escalated it from quick to full-cycle.
    let esc = escalated.of_kind("item.escalated");
    assert_eq!(esc.len(), 1, "one escalation: {esc:?}");
    assert_eq!(esc[0].data["from_track"], "quick");
    assert_eq!(escalated.item.track.as_str(), "full-cycle");

    // Main on the remote: the seed commit, then one merge per item — nothing else,
    // each the merge its pull request records, with the item's head as 2nd parent.
    let remote = ws.join("remote.git");
    let first_parent = git_out(&remote, &["rev-list", "--first-parent", "--reverse", "main"]);
    let chain: Vec<&str> = first_parent.lines().collect();
    assert_eq!(chain.len(), 4, "seed + three merges on main: {chain:?}");
    let mut merges = BTreeSet::new();
    for sha in &chain[1..] {
        let parents = git_out(&remote, &["rev-list", "--parents", "-n", "1", sha]);
        assert_eq!(parents.split_whitespace().count(), 3, "{sha} on main is a merge commit");
        assert!(git_out(&remote, &["log", "-1", "--format=%s", sha]).starts_with("Merge DEMO-"), "{sha}");
        merges.insert((*sha).to_owned());
    }
    let recorded: BTreeSet<String> = seen
        .iter()
        .map(|s| {
            let pr = s.item.pr.as_ref().unwrap_or_else(|| panic!("{} has a pull request", s.item.key));
            assert_eq!(pr.state, "merged");
            let sha = pr.merge_sha.clone().unwrap();
            assert_eq!(
                git_out(&remote, &["rev-parse", &format!("{sha}^2")]),
                s.item.head_sha.clone().unwrap(),
                "{}: the merge brings in the item's head",
                s.item.key
            );
            sha
        })
        .collect();
    assert_eq!(merges, recorded, "main holds exactly the items' PR merges");

    // The sample repository: the agents' work is on main, and its tests pass there.
    for path in [
        "docs/work-items/DEMO-2/requirements.md",
        "docs/work-items/DEMO-2/adr.md",
        "docs/work-items/DEMO-3/requirements.md",
        "docs/work-items/DEMO-3/adr.md",
        "src/tax.sh",
        "tests/test_demo_1.sh",
        "tests/test_demo_2.sh",
        "tests/test_demo_3.sh",
    ] {
        git_out(&remote, &["cat-file", "-e", &format!("main:{path}")]);
    }
    let project = ws.join("project");
    assert_eq!(git_out(&project, &["rev-parse", "HEAD"]), *chain.last().unwrap(), "the clone is pulled to main");
    let suite = Command::new("sh").arg("test.sh").current_dir(&project).output().unwrap();
    assert!(suite.status.success(), "the merged project's tests: {}", text(&suite.stdout));
    assert_eq!(text(&suite.stdout).trim(), "9 passed, 0 failed");

    // No agent or gate process outlives the demo.
    let pids = std::fs::read_to_string(ws.join(".demo/pids")).unwrap();
    let pids: Vec<i32> = pids.split_whitespace().map(|p| p.parse().unwrap()).collect();
    assert!(pids.len() >= 20, "every agent run recorded its pid: {pids:?}");
    let survivors: Vec<i32> = pids.iter().copied().filter(|p| alive(*p)).collect();
    assert!(survivors.is_empty(), "agent processes left behind: {survivors:?}");
    let ws_str = ws.display().to_string();
    let inside: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter(|e| std::fs::read_link(e.path().join("cwd")).is_ok_and(|c| c.starts_with(&ws_str)))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(inside.is_empty(), "processes still working in the demo workspace: {inside:?}");
}

#[test]
fn keep_refuses_a_non_empty_folder_that_is_not_a_demo_workspace() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("precious.txt"), "mine").unwrap();
    let out = demo(&["--keep", tmp.path().to_str().unwrap()], &[]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(&tmp.path().display().to_string()), "names the folder: {stderr}");
    assert!(stderr.contains("not an orch demo workspace"), "{stderr}");
    let left: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["precious.txt"], "nothing written or removed");
    assert_eq!(std::fs::read_to_string(tmp.path().join("precious.txt")).unwrap(), "mine");
}

#[test]
fn keep_refuses_a_workspace_whose_demo_is_still_running() {
    let tmp = tempfile::tempdir().unwrap();
    let marker = tmp.path().join(".orch-demo");
    let file = std::fs::File::create(&marker).unwrap();
    std::fs::write(tmp.path().join("orch.toml"), "# a running demo's\n").unwrap();
    file.lock().unwrap();
    let out = demo(&["--keep", tmp.path().to_str().unwrap()], &[]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("another `orch demo` is running"), "{stderr}");
    assert_eq!(std::fs::read_to_string(tmp.path().join("orch.toml")).unwrap(), "# a running demo's\n");
}

#[test]
fn agent_says_what_is_missing_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let ws = tmp.path().join("ws");
    let ws_arg = ws.to_str().unwrap();
    let path = bin.to_str().unwrap();

    let run = |agent: &str| {
        let mut cmd = Command::new(ORCH);
        cmd.args(["demo", "--agent", agent, "--keep", ws_arg])
            .env("PATH", path)
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("OPENAI_API_KEY");
        cmd.output().unwrap()
    };
    let out = run("claude-code");
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("`claude` is not on PATH"), "{stderr}");
    assert!(stderr.contains("ANTHROPIC_API_KEY is not set"), "{stderr}");

    // An installed CLI is found; only the key is missing then.
    common::deployment::write_script(&bin.join("codex"), "exit 0");
    let out = run("codex");
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("OPENAI_API_KEY is not set"), "{stderr}");
    assert!(!stderr.contains("not on PATH"), "{stderr}");
    assert!(!ws.exists(), "no workspace is made when the agent cannot run");
}
