//! `kill -9` of `orch serve` while agents run, then a restart: the orphaned agent
//! groups are killed by start-up reconcile, every job ends exactly once, every item
//! reaches `done`, and `orch audit` passes. Real binary, real processes, SQLite.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

mod common;

use common::{orch_output, serve, wait_until};

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(')').is_some_and(|(_, r)| !r.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

fn write_script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// On failure, kills whatever agents the test started (they run in their own
/// process groups and would otherwise outlive it).
struct KillPidsOnDrop(std::path::PathBuf);

impl Drop for KillPidsOnDrop {
    fn drop(&mut self) {
        for entry in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
            if let Some(pid) = std::fs::read_to_string(entry.path()).ok().and_then(|s| s.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

const CONFIG: &str = r#"
[store]
url = "sqlite://state/orch.db"
[node]
id = "crash-node"
max_concurrent_jobs = 8
data_dir = "data"
[reaper]
interval_s = 0.2
finalize_grace_s = 1
max_running_s = 120
lease_ttl_s = 1
heartbeat_s = 0.1
[[repos]]
name = "shop"
key = "SHOP"
path = "."
[agents.analyst]
command = ["./agents/pass.sh"]
timeout_s = 30
[agents.architect]
command = ["./agents/pass.sh"]
timeout_s = 30
[agents.developer]
command = ["./agents/developer.sh"]
timeout_s = 30
[agents.tester]
command = ["./agents/pass.sh"]
timeout_s = 30
[agents.deployer]
command = ["./agents/pass.sh"]
timeout_s = 30
"#;

#[test]
fn kill_9_of_serve_then_restart_kills_orphans_and_ends_every_job_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("orch.toml"), CONFIG).unwrap();
    orch_test_support::origin_for(d);
    std::fs::create_dir_all(d.join("agents")).unwrap();
    std::fs::create_dir_all(d.join("pids")).unwrap();
    let pass = r#"printf '{"verdict":"pass","summary":"ok"}' > "$ORCH_VERDICT_FILE""#;
    write_script(&d.join("agents/pass.sh"), pass);
    // First run of each item's developer: record our pid, then hang (and ignore TERM).
    write_script(
        &d.join("agents/developer.sh"),
        &format!(
            "pids=\"$(dirname \"$ORCH_WORKTREE\")/../../pids\"\n\
             if [ -f \"$pids/$ORCH_ITEM\" ]; then {pass}; exit 0; fi\n\
             trap '' TERM\necho $$ > \"$pids/$ORCH_ITEM.tmp\" && mv \"$pids/$ORCH_ITEM.tmp\" \"$pids/$ORCH_ITEM\"\n\
             while :; do sleep 0.05; done"
        ),
    );
    let out = orch_output(d, &["check"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let mut first = serve(d, &["--poll-s", "0.05", "--drain-s", "2"], "serve-1.log");
    let _cleanup_agents = KillPidsOnDrop(d.join("pids"));
    let keys: Vec<String> = (1..=3).map(|n| format!("SHOP-{n}")).collect();
    for _ in &keys {
        let out = orch_output(d, &["item", "add", "--repo", "shop", "--kind", "bug", "--title", "crash me"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    wait_until("three agents running", || keys.iter().all(|k| d.join("pids").join(k).exists()));
    let pids: Vec<i32> =
        keys.iter().map(|k| std::fs::read_to_string(d.join("pids").join(k)).unwrap().trim().parse().unwrap()).collect();

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first.0.id() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    first.0.wait().unwrap();
    assert!(pids.iter().all(|p| alive(*p)), "agents outlive a kill -9 of their node (own process groups)");

    let mut second = serve(d, &["--poll-s", "0.05", "--drain-s", "2"], "serve-2.log");
    wait_until("reconcile to kill the orphaned agents", || pids.iter().all(|p| !alive(*p)));
    wait_until("every item done", || {
        keys.iter().all(|k| {
            let out = orch_output(d, &["item", "show", k, "--json"]);
            out.status.success()
                && serde_json::from_slice::<serde_json::Value>(&out.stdout).is_ok_and(|v| v["status"] == "done")
        })
    });
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(second.0.id() as i32), nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    assert!(second.0.wait().unwrap().success(), "serve exits cleanly on SIGTERM");

    for k in &keys {
        let out = orch_output(d, &["item", "events", k, "--json"]);
        assert!(out.status.success());
        let events: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let events = events.as_array().unwrap();
        let mut ended = std::collections::HashMap::new();
        for e in events {
            let kind = e["kind"].as_str().unwrap();
            if kind.starts_with("item.") && kind != "item.created" {
                *ended.entry(e["job"].as_i64().unwrap_or(-1)).or_insert(0) += 1;
            }
        }
        assert!(ended.values().all(|n| *n == 1), "{k}: a job committed more than one transition: {ended:?}");
        // The run that died with its node is an attempt: failed as lost, retried.
        assert!(
            events.iter().any(|e| e["kind"] == "job.failed"
                && e["reason"].as_str().is_some_and(|r| r.contains("node died during the run"))),
            "{k}: the interrupted run was failed as lost: {events:?}"
        );
        assert!(events.iter().any(|e| e["kind"] == "item.retried" || e["kind"] == "item.rolled_back"));
    }
    let audit = orch_output(d, &["audit"]);
    assert!(
        audit.status.success(),
        "audit: {}{}",
        String::from_utf8_lossy(&audit.stdout),
        String::from_utf8_lossy(&audit.stderr)
    );
}
