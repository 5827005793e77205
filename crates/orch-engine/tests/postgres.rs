//! The engine on the PostgreSQL store: the happy path, the incident's deferral,
//! and a second node taking over a dead node's finalization, each in a fresh
//! database on the local server.

mod common;

use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;
use orch_core::{ItemKind, ItemStatus, JobStatus};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_quick_track_reaches_done() {
    let h = Harness::from_text_pg(config_text("", FAST_REAPER)).await;
    let node = h.node("node-a");
    let run = h.start(&node);
    let keys = [h.add_item(ItemKind::Bug).await, h.add_item(ItemKind::Chore).await];
    for key in &keys {
        let item = h.wait_status(key, ItemStatus::Done).await;
        assert_eq!(item.version, 5);
    }
    node.shutdown_token().cancel();
    run.await.unwrap();
    h.assert_audit_clean().await;
}

const SLOW_GATE: &str = r#"
[[edges]]
from = "deploy-staging"
to = "deploy"
gates = ["slow"]
on_fail = "development"

[gates.slow]
command = ["./gates/slow.sh"]
timeout_s = 30
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_second_node_takes_over_a_dead_finalizer_and_defers_to_a_live_one() {
    let h = Harness::from_text_pg(config_text(SLOW_GATE, FAST_REAPER)).await;
    std::fs::create_dir_all(h.path().join("gates")).unwrap();
    script(
        &h.path().join("gates"),
        "slow.sh",
        "if [ -f gate-ran ]; then exit 0; fi\ntouch gate-ran\necho $$ > gate-pid\ntouch gate-started\n\
         while [ ! -f release ]; do sleep 0.05; done",
    );
    let a = CrashableNode::start(&h, "node-a");
    let key = h.add_item(ItemKind::Bug).await;
    let wd = h.path().join("data/work").join(key.to_string());
    wait_file(&wd.join("gate-started")).await;

    // While node-a lives and heartbeats, node-b's reaper defers.
    let b = h.node("node-b");
    h.clock.advance(Duration::from_millis(1500));
    let now = h.clock.now_ts();
    h.wait_job(&key, "node-a to renew its lease", |j| {
        j.status == JobStatus::Finishing && j.lease_expires_at.is_some_and(|t| t > now)
    })
    .await;
    let report = b.reaper_pass().await.unwrap();
    assert_eq!((report.tier2_deferred, report.tier2_taken_over), (1, 0), "{report:?}");

    // node-a dies mid-gates; once its lease lapses node-b takes over, once.
    let gate_pid = read_pid(&wd.join("gate-pid")).await;
    a.crash();
    orch_engine::process::kill_group(gate_pid, Signal::SIGKILL);
    let run = h.start(&b);
    h.clock.advance(Duration::from_millis(1100));
    let report = b.reaper_pass().await.unwrap();
    assert_eq!(report.tier2_taken_over, 1, "{report:?}");
    h.wait_status(&key, ItemStatus::Done).await;
    let events = h.events(&key).await;
    assert_eq!(
        events.iter().filter(|e| e.kind == "item.advanced" && e.from.as_deref() == Some("deploy-staging")).count(),
        1
    );
    b.shutdown_token().cancel();
    run.await.unwrap();
    h.assert_audit_clean().await;
}
