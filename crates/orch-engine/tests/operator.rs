//! Operator actions against a running node, and graceful shutdown: cancel kills
//! the running agent's group and fences its job; escalate moves the item to
//! full-cycle; an approval edge waits for `approve`; SIGTERM-style shutdown puts
//! running jobs back in the queue so the next node continues. Every scenario
//! runs on SQLite and on PostgreSQL (`sqlite::…`, `postgres::…`).

mod common;

use std::time::Duration;

use common::*;
use orch_core::{ItemKind, ItemStatus, JobStatus, OperatorAction};
use orch_engine::ops;

fn workdir(h: &Harness, key: &orch_core::ItemKey) -> std::path::PathBuf {
    h.path().join("data/work").join(key.to_string())
}

const SLOW_DEVELOPER: &str = "echo $$ > pid\nwhile [ ! -f release ]; do sleep 0.05; done\n";

async fn cancel_kills_the_running_agent_and_fences_its_job(backend: Backend) {
    let h = Harness::new(backend, "").await;
    h.agent("developer", &format!("{SLOW_DEVELOPER}{PASS}"));
    let node = h.node("node-a");
    let run = h.start(&node);
    let key = h.add_item(ItemKind::Bug).await;
    let pid = read_pid(&workdir(&h, &key).join("pid")).await;

    let t = ops::apply(h.store.as_ref(), &h.config, &key, OperatorAction::Cancel, h.clock.now_ts()).await.unwrap();
    assert_eq!(t.next.status, ItemStatus::Cancelled);
    wait_for("the cancelled agent to be killed", || async move { (!alive(pid)).then_some(()) }).await;
    let job = h.wait_job(&key, "the job to be cancelled", |j| j.status == JobStatus::Cancelled).await;
    assert_eq!(job.stage.as_str(), "development");
    let item = h.item(&key).await;
    assert_eq!(item.status, ItemStatus::Cancelled);

    // A terminal item refuses everything else.
    let err = ops::apply(h.store.as_ref(), &h.config, &key, OperatorAction::Retry, h.clock.now_ts()).await.unwrap_err();
    assert!(err.to_string().contains("takes no further transitions"), "{err}");
    node.shutdown_token().cancel();
    run.await.unwrap();
    h.assert_audit_clean().await;
}

async fn escalate_moves_a_running_bug_to_full_cycle(backend: Backend) {
    let h = Harness::new(backend, "").await;
    h.agent("developer", &format!("if [ ! -f escalated ]; then touch escalated; {SLOW_DEVELOPER}fi\n{PASS}"));
    let node = h.node("node-a");
    let run = h.start(&node);
    let key = h.add_item(ItemKind::Bug).await;
    let pid = read_pid(&workdir(&h, &key).join("pid")).await;

    ops::apply(h.store.as_ref(), &h.config, &key, OperatorAction::Escalate, h.clock.now_ts()).await.unwrap();
    wait_for("the old agent to be killed", || async move { (!alive(pid)).then_some(()) }).await;
    let item = h.wait_status(&key, ItemStatus::Done).await;
    assert_eq!(item.track.as_str(), "full-cycle");
    let events = h.events(&key).await;
    let esc = events.iter().find(|e| e.kind == "item.escalated").unwrap();
    assert_eq!(esc.to.as_deref(), Some("analysis"));
    assert!(events.iter().any(|e| e.kind == "item.advanced" && e.from.as_deref() == Some("analysis")));
    node.shutdown_token().cancel();
    run.await.unwrap();
    h.assert_audit_clean().await;
}

async fn approval_edge_waits_for_approve(backend: Backend) {
    let h = Harness::new(backend, "[[edges]]\nfrom = \"deploy-staging\"\nto = \"deploy\"\napproval = true\n").await;
    let node = h.node("node-a");
    let run = h.start(&node);
    let key = h.add_item(ItemKind::Bug).await;
    let item = h.wait_status(&key, ItemStatus::WaitingApproval).await;
    assert_eq!(item.stage.as_str(), "deploy-staging");
    let refused = ops::apply(h.store.as_ref(), &h.config, &key, OperatorAction::Retry, h.clock.now_ts()).await;
    assert!(refused.is_err());
    ops::apply(h.store.as_ref(), &h.config, &key, OperatorAction::Approve, h.clock.now_ts()).await.unwrap();
    let item = h.wait_status(&key, ItemStatus::Done).await;
    assert_eq!(item.stage.as_str(), "deploy");
    node.shutdown_token().cancel();
    run.await.unwrap();
    h.assert_audit_clean().await;
}

async fn blocked_item_retry_gets_fresh_attempts(backend: Backend) {
    let h = Harness::new(backend, "[stages.development]\nrole = \"developer\"\nmax_attempts = 1\n").await;
    h.agent("developer", &format!("if [ ! -f failed-once ]; then touch failed-once; exit 4; fi\n{PASS}"));
    let node = h.node("node-a");
    let run = h.start(&node);
    let key = h.add_item(ItemKind::Bug).await;
    h.wait_status(&key, ItemStatus::Blocked).await;
    ops::apply(h.store.as_ref(), &h.config, &key, OperatorAction::Retry, h.clock.now_ts()).await.unwrap();
    let item = h.wait_status(&key, ItemStatus::Done).await;
    assert_eq!(item.attempts["development"], 1, "retry resets the stage's attempts");
    assert_eq!(h.jobs(&key).await.len(), 5);
    node.shutdown_token().cancel();
    run.await.unwrap();
    h.assert_audit_clean().await;
}

async fn shutdown_kills_agents_after_the_drain_and_requeues_their_jobs(backend: Backend) {
    let h = Harness::new(backend, "").await;
    h.agent("developer", &format!("if [ -f pid ]; then {PASS}; exit 0; fi\n{SLOW_DEVELOPER}{PASS}"));
    let mut opts = h.node_opts("node-a");
    opts.drain = Duration::from_millis(300);
    let node = orch_engine::Node::new(h.store.clone(), h.config.clone(), std::sync::Arc::new(h.clock.clone()), opts);
    let run = h.start(&node);
    let key = h.add_item(ItemKind::Bug).await;
    let pid = read_pid(&workdir(&h, &key).join("pid")).await;

    node.shutdown_token().cancel();
    run.await.unwrap();
    assert!(!alive(pid), "the agent's group is killed at the drain deadline");
    let job = &h.jobs(&key).await[0];
    assert_eq!(job.status, JobStatus::Queued, "released back to the queue");
    assert_eq!(job.owner, None);
    assert_eq!(h.item(&key).await.status, ItemStatus::Queued);

    // Another node continues at once, without waiting for any lease to expire.
    let b = h.node("node-b");
    let run_b = h.start(&b);
    h.wait_status(&key, ItemStatus::Done).await;
    b.shutdown_token().cancel();
    run_b.await.unwrap();
    h.assert_audit_clean().await;
}

backend_tests!(
    cancel_kills_the_running_agent_and_fences_its_job,
    escalate_moves_a_running_bug_to_full_cycle,
    approval_edge_waits_for_approve,
    blocked_item_retry_gets_fresh_attempts,
    shutdown_kills_agents_after_the_drain_and_requeues_their_jobs,
);
