//! End-to-end engine tests with real shell-script agents and gates, a real store
//! and the controllable clock: the happy path, gate rollbacks, attempts running
//! out, an agent killed from outside, and bad agent output (I8). Every scenario
//! runs on SQLite and on PostgreSQL (`sqlite::…`, `postgres::…`).

mod common;

use common::*;
use orch_core::{ItemKind, ItemStatus, JobStatus};

const RETEST_EDGE: &str = r#"
[[edges]]
from = "testing"
to = "deploy-staging"
gates = ["retest"]
on_fail = "development"

[gates.retest]
command = ["./gates/retest.sh"]
timeout_s = 10
"#;

async fn quick_track_happy_path_reaches_done_with_events_in_order(backend: Backend) {
    let h = Harness::new(backend, "").await;
    h.agent(
        "developer",
        &format!(
            "echo \"$ORCH_ITEM $ORCH_STAGE $ORCH_ROLE $ORCH_ATTEMPT $ORCH_JOB_ID\" > \"$ORCH_WORKTREE/env.txt\"\n\
             test -s \"$ORCH_PROMPT_FILE\" && cp \"$ORCH_PROMPT_FILE\" \"$ORCH_WORKTREE/prompt.md\"\n{PASS}"
        ),
    );
    let node = h.node("node-a");
    let run = h.start(&node);
    let key = h.add_item(ItemKind::Bug).await;
    // A chore filed alongside runs the same quick track at the same time.
    let chore = h.add_item(ItemKind::Chore).await;
    let item = h.wait_status(&key, ItemStatus::Done).await;
    assert_eq!(item.stage.as_str(), "deploy");
    assert_eq!(item.version, 5, "four transitions after creation");
    let chore_item = h.wait_status(&chore, ItemStatus::Done).await;
    assert_eq!((chore_item.track.as_str(), chore_item.version), ("quick", 5));

    let kinds = h.kinds(&key).await;
    let stage_run = ["job.queued", "job.started", "job.finished"];
    let mut expected = vec!["item.created"];
    for _ in 0..3 {
        expected.extend(stage_run);
        expected.push("item.advanced");
    }
    expected.extend(stage_run);
    expected.push("item.done");
    let seen: Vec<&str> = kinds.iter().map(String::as_str).filter(|k| expected.contains(k)).collect();
    assert_eq!(seen, expected);

    let env = std::fs::read_to_string(h.path().join("data/work").join(key.to_string()).join("env.txt")).unwrap();
    let fields: Vec<&str> = env.split_whitespace().collect();
    assert_eq!(&fields[..4], &[key.to_string().as_str(), "development", "developer", "1"]);
    let prompt = std::fs::read_to_string(h.path().join("data/work").join(key.to_string()).join("prompt.md")).unwrap();
    assert!(prompt.contains("Fix the checkout") && prompt.contains("empty carts"), "{prompt}");

    let jobs = h.jobs(&key).await;
    assert_eq!(jobs.len(), 4);
    assert!(jobs.iter().all(|j| j.status == JobStatus::Done && j.exit_code == Some(0)));
    let log = std::fs::read_to_string(jobs[1].log_path.as_ref().unwrap()).unwrap();
    assert!(log.contains(&format!("tester working on {key}")), "{log}");
    // No stage but the last has gates or a merge: each hands its item's next
    // job to this node in the write that ends it (two items, three each).
    assert_eq!(node.metrics().handoff_claims_total, 6);
    assert!(jobs.iter().all(|j| j.owner.as_deref() == Some("node-a") && j.pid.is_some()), "{jobs:?}");

    node.shutdown_token().cancel();
    run.await.unwrap();
    h.assert_audit_clean().await;
}

async fn gate_failure_rolls_back_to_on_fail_then_second_attempt_passes(backend: Backend) {
    let h = Harness::new(backend, RETEST_EDGE).await;
    std::fs::create_dir_all(h.path().join("gates")).unwrap();
    // Red on its first run, green after.
    script(
        &h.path().join("gates"),
        "retest.sh",
        "if [ -f ran ]; then echo 'all green'; exit 0; fi\ntouch ran\necho '2 tests failed'\nexit 1",
    );
    let node = h.node("node-a");
    let run = h.start(&node);
    let key = h.add_item(ItemKind::Bug).await;
    let item = h.wait_status(&key, ItemStatus::Done).await;
    assert_eq!(item.attempts["development"], 2);
    assert_eq!(item.attempts["testing"], 2);

    let events = h.events(&key).await;
    let rollback = events.iter().find(|e| e.kind == "item.rolled_back").expect("a rollback");
    assert_eq!(rollback.from.as_deref(), Some("testing"));
    assert_eq!(rollback.to.as_deref(), Some("development"));
    let reason = rollback.reason.as_deref().unwrap();
    assert!(reason.contains("retest") && reason.contains("2 tests failed"), "{reason}");
    let gates: Vec<&str> = events.iter().filter(|e| e.kind.starts_with("gate.")).map(|e| e.kind.as_str()).collect();
    assert_eq!(gates, ["gate.failed", "gate.passed"]);
    // Development (twice) and deploy-staging hand off in one write; testing has
    // a gate and deploy merges, so those record their finish first.
    assert_eq!(node.metrics().handoff_claims_total, 3);

    node.shutdown_token().cancel();
    run.await.unwrap();
    h.assert_audit_clean().await;
}

async fn exhausted_attempts_block_the_item_with_the_reason(backend: Backend) {
    let extra = format!("{RETEST_EDGE}\n[stages.development]\nrole = \"developer\"\nmax_attempts = 2\n");
    let h = Harness::new(backend, &extra).await;
    std::fs::create_dir_all(h.path().join("gates")).unwrap();
    script(&h.path().join("gates"), "retest.sh", "echo 'still red'\nexit 3");
    let node = h.node("node-a");
    let run = h.start(&node);
    let key = h.add_item(ItemKind::Bug).await;
    let item = h.wait_status(&key, ItemStatus::Blocked).await;
    assert_eq!(item.stage.as_str(), "development");
    assert_eq!(item.attempts["development"], 2);
    let events = h.events(&key).await;
    let blocked = events.iter().find(|e| e.kind == "item.blocked").unwrap();
    let reason = blocked.reason.as_deref().unwrap();
    assert!(reason.contains("all 2 of its attempts") && reason.contains("still red"), "{reason}");
    assert!(h.jobs(&key).await.iter().all(|j| j.status.is_ended()));

    node.shutdown_token().cancel();
    run.await.unwrap();
    h.assert_audit_clean().await;
}

async fn agent_killed_from_outside_ends_lost_and_the_stage_is_retried(backend: Backend) {
    let h = Harness::new(backend, "").await;
    h.agent(
        "developer",
        &format!(
            "if [ -f first-run ]; then {PASS}; exit 0; fi\ntouch first-run\necho $$ > pid\nwhile :; do sleep 0.05; done"
        ),
    );
    let node = h.node("node-a");
    let run = h.start(&node);
    let key = h.add_item(ItemKind::Bug).await;
    let pid_file = h.path().join("data/work").join(key.to_string()).join("pid");
    wait_file(&pid_file).await;
    let pid: i32 = wait_for("pid written", || {
        let p = pid_file.clone();
        async move { std::fs::read_to_string(&p).ok()?.trim().parse().ok() }
    })
    .await;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();

    let item = h.wait_status(&key, ItemStatus::Done).await;
    assert_eq!(item.attempts["development"], 2);
    let first = &h.jobs(&key).await[0];
    assert_eq!(first.status, JobStatus::Failed);
    assert_eq!(first.exit_code, None);
    assert!(first.reason.as_deref().unwrap().contains("exit=lost"), "{:?}", first.reason);
    // The lost run's retry went through the scheduler; the passing stages after
    // it (development, testing, deploy-staging) each handed their item on.
    assert_eq!(node.metrics().handoff_claims_total, 3);
    assert_eq!(h.jobs(&key).await[1].stage.as_str(), "development");

    node.shutdown_token().cancel();
    run.await.unwrap();
    h.assert_audit_clean().await;
}

/// One bad-input case: the developer misbehaves only for the first item; that item
/// ends blocked (one attempt allowed) with a reason containing `expect`, and a
/// second item still goes through: the node keeps serving.
async fn bad_input_case(backend: Backend, extra: &str, developer: &str, expect: &str) {
    let extra = format!("{extra}\n[stages.development]\nrole = \"developer\"\nmax_attempts = 1\n");
    let h = Harness::new(backend, &extra).await;
    h.agent("developer", &format!("if [ \"$ORCH_ITEM\" = SHOP-1 ]; then\n{developer}\nfi\n{PASS}"));
    let node = h.node("node-a");
    let run = h.start(&node);
    let bad = h.add_item(ItemKind::Bug).await;
    let bad_item = h.wait_status(&bad, ItemStatus::Blocked).await;
    let job = &h.jobs(&bad).await[0];
    assert_eq!(job.status, JobStatus::Failed);
    let reason = job.reason.as_deref().unwrap_or_default();
    assert!(reason.contains(expect), "reason {reason:?} should contain {expect:?}");
    assert_eq!(bad_item.stage.as_str(), "development");

    let good = h.add_item(ItemKind::Bug).await;
    if extra.contains("missing-gate") {
        // The gate is broken for everyone: the second item is blocked the same way.
        h.wait_status(&good, ItemStatus::Blocked).await;
    } else {
        h.wait_status(&good, ItemStatus::Done).await;
    }
    node.shutdown_token().cancel();
    run.await.unwrap();
    h.assert_audit_clean().await;
}

async fn malformed_verdict_fails_the_job_with_the_reason(backend: Backend) {
    bad_input_case(backend, "", "echo 'verdict: pass' > \"$ORCH_VERDICT_FILE\"; exit 0", "not valid JSON").await;
}

async fn unknown_verdict_value_fails_the_job_with_the_reason(backend: Backend) {
    bad_input_case(
        backend,
        "",
        "echo '{\"verdict\":\"maybe\"}' > \"$ORCH_VERDICT_FILE\"; exit 0",
        "unknown variant `maybe`",
    )
    .await;
}

async fn missing_verdict_fails_the_job_with_the_reason(backend: Backend) {
    bad_input_case(backend, "", "exit 0", "verdict file is missing").await;
}

async fn oversized_verdict_fails_the_job_with_the_reason(backend: Backend) {
    bad_input_case(
        backend,
        "",
        "head -c 1100000 /dev/zero | tr '\\0' ' ' > \"$ORCH_VERDICT_FILE\"; exit 0",
        "over the 1048576-byte limit",
    )
    .await;
}

async fn agent_exit_code_fails_the_job_with_the_reason(backend: Backend) {
    bad_input_case(backend, "", "exit 7", "agent exited with code 7").await;
}

async fn agent_command_not_found_fails_the_job(backend: Backend) {
    let text = config_text("[stages.development]\nrole = \"developer\"\nmax_attempts = 1\n", FAST_REAPER)
        .replace("./agents/developer.sh", "./agents/no-such-agent.sh");
    let h = Harness::from_text(backend, text).await;
    let node = h.node("node-a");
    let run = h.start(&node);
    let key = h.add_item(ItemKind::Bug).await;
    h.wait_status(&key, ItemStatus::Blocked).await;
    let reason = h.jobs(&key).await[0].reason.clone().unwrap_or_default();
    assert!(reason.contains("command not found") && reason.contains("no-such-agent.sh"), "{reason}");
    node.shutdown_token().cancel();
    run.await.unwrap();
}

async fn agent_not_executable_fails_the_job(backend: Backend) {
    use std::os::unix::fs::PermissionsExt;
    let h = Harness::new(backend, "[stages.development]\nrole = \"developer\"\nmax_attempts = 1\n").await;
    let agent = h.path().join("agents/developer.sh");
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o644)).unwrap();
    let node = h.node("node-a");
    let run = h.start(&node);
    let key = h.add_item(ItemKind::Bug).await;
    h.wait_status(&key, ItemStatus::Blocked).await;
    let reason = h.jobs(&key).await[0].reason.clone().unwrap_or_default();
    assert!(reason.contains("not executable"), "{reason}");
    node.shutdown_token().cancel();
    run.await.unwrap();
}

async fn missing_gate_command_fails_the_job_with_the_reason(backend: Backend) {
    let extra = "[[edges]]\nfrom = \"development\"\nto = \"testing\"\ngates = [\"missing-gate\"]\n\
                 [gates.missing-gate]\ncommand = [\"./gates/not-there.sh\"]\ntimeout_s = 5\n";
    bad_input_case(backend, extra, "true", "gate missing-gate could not start: command not found").await;
}

backend_tests!(
    quick_track_happy_path_reaches_done_with_events_in_order,
    gate_failure_rolls_back_to_on_fail_then_second_attempt_passes,
    exhausted_attempts_block_the_item_with_the_reason,
    agent_killed_from_outside_ends_lost_and_the_stage_is_retried,
    malformed_verdict_fails_the_job_with_the_reason,
    unknown_verdict_value_fails_the_job_with_the_reason,
    missing_verdict_fails_the_job_with_the_reason,
    oversized_verdict_fails_the_job_with_the_reason,
    agent_exit_code_fails_the_job_with_the_reason,
    agent_command_not_found_fails_the_job,
    agent_not_executable_fails_the_job,
    missing_gate_command_fails_the_job_with_the_reason,
);
