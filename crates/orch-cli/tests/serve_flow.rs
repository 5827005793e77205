//! What a user does after `orch init`: run `orch serve`, add an item, watch it
//! reach `done` with `orch queue --json` and `orch item events`, and read an
//! agent's output with `orch logs` (and `--follow` on a running job).

use std::process::{Command, Stdio};

mod common;

use common::{ORCH, orch, serve, wait_until};

#[test]
fn serve_runs_an_item_to_done_and_logs_and_queue_show_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(orch(d, &["init", "."]).0);
    orch_test_support::origin_for(d);
    // The tester waits for a file so the test can follow a running job's log.
    let tester = d.join("agents/tester.sh");
    let script = std::fs::read_to_string(&tester).unwrap();
    let gated = script.replacen(
        "set -eu\n",
        "set -eu\necho 'tester: waiting'\nwhile [ ! -f \"$ORCH_WORKTREE/go\" ]; do sleep 0.05; done\n",
        1,
    );
    assert_ne!(gated, script);
    std::fs::write(&tester, gated).unwrap();

    let _serve = serve(d, &["--poll-s", "0.05"], "serve.log");
    let (ok, out, err) = orch(d, &["item", "add", "--repo", "demo", "--kind", "bug", "--title", "follow me"]);
    assert!(ok, "{err}");
    assert!(out.contains("DEMO-1"), "{out}");

    // Job 2 is the tester's; follow it while it runs, then let it finish.
    wait_until("the tester to start", || {
        let (ok, out, _) = orch(d, &["logs", "2"]);
        ok && out.contains("tester: waiting")
    });
    let follower = Command::new(ORCH)
        .args(["logs", "2", "--follow"])
        .current_dir(d)
        .env_remove("ORCH_CONFIG")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::fs::write(d.join(".orch/work/DEMO-1/go"), "").unwrap();
    let followed = follower.wait_with_output().unwrap();
    let followed = String::from_utf8_lossy(&followed.stdout);
    assert!(followed.contains("tester: waiting") && followed.contains("tester: working on DEMO-1"), "{followed}");

    wait_until("DEMO-1 to be done", || {
        let (_, out, _) = orch(d, &["queue", "--json"]);
        serde_json::from_str::<serde_json::Value>(&out).is_ok_and(|q| q["items_by_status"]["done"] == 1)
    });
    let (ok, out, _) = orch(d, &["logs", "1"]);
    assert!(ok && out.contains("developer: working on DEMO-1"), "{out}");
    let (ok, out, _) = orch(d, &["item", "events", "DEMO-1"]);
    assert!(ok && out.contains("item.done"), "{out}");
    let (ok, _, err) = orch(d, &["logs", "99"]);
    assert!(!ok && err.contains("no job 99"), "{err}");
    let (ok, out, err) = orch(d, &["audit"]);
    assert!(ok, "{out}{err}");
}
